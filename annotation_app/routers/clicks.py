"""``POST /api/sessions/{token}/clicks``: the hot route.

``async``, but it does no database work on the event loop: the click is queued for the store's
shared write transaction (SQLite group commit; a worker thread on PostgreSQL) and the route
awaits the commit, so the loop keeps reading and answering other requests meanwhile and no
thread is held per waiting click. The reply is rendered straight from the service's dict
(``response_model`` documents it).
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response

from psc6k_web.errors import error_responses

from ..deps import Service, SessionToken
from ..models import ClickIn, ClickStored

router = APIRouter(prefix="/api", tags=["participant"])


@router.post("/sessions/{token}/clicks", response_model=ClickStored, status_code=201,
             responses={200: {"model": ClickStored, "description": "a retry: the stored reply"},
                        **error_responses(404, 409, 410)})
async def post_click(body: ClickIn, token: SessionToken, service: Service):
    """Store one click, durably, before answering. Same client_id again: the same body
    (200). Another click on an answered trial: 409. Lapsed lease: 410."""
    reply, created = await service.clicks.record_async(token, body.trial_id, body.x, body.y, body.rt_ms, body.client_id,
                                                       body.display)
    return Response(json.dumps(reply, separators=(",", ":")), status_code=201 if created else 200,
                    media_type="application/json")
