"""``POST /score``: score a submission, store nothing but an audit row."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from psc6k_web.deps import ClientAddress
from psc6k_web.responses import SafeJSONResponse

from .. import db
from ..body import check_headers, receive_submission
from ..deps import AppState, OptionalSubmitter, State, record_counted, require_quota
from ..models import Problem, ScoreReply
from ..openapi_bodies import PROBLEM_RESPONSES, SUBMISSION_REQUEST_BODY
from ..scoring import Scored

router = APIRouter(tags=["scoring"])


@router.post(
    "/score", response_model=ScoreReply, openapi_extra=SUBMISSION_REQUEST_BODY,
    responses={**PROBLEM_RESPONSES, 401: {"model": Problem}, 429: {"model": Problem}},
    summary="Score a submission (same JSON as `psc6k eval --json`)",
)
async def score(request: Request, state: AppState, client: ClientAddress, token: OptionalSubmitter):
    """Validate and score a submission with the code of ``psc6k eval``; the reply is its JSON
    plus ``submission_id``. In private mode a token is required, each accepted scoring counts
    against its daily quota, and only aggregates are returned."""
    if token is not None:
        require_quota(token, state)
    scored = await score_upload(request, state, client)
    reply = scored.result
    row = db.Scoring(id=db.new_id(), kind=reply["kind"], n_pairs=reply["n_pairs"],
                     pck05=db.finite_or_none(reply["overall"].get("pck@0.05")),
                     pck10=db.finite_or_none(reply["overall"].get("pck@0.10")),
                     scorer_version=reply["scorer_version"])
    if token is not None:
        record_counted(state, token, row)
    else:
        db.record(state.engine, row)
    return SafeJSONResponse({"submission_id": row.id, **reply})


async def score_upload(request: Request, state: State, client: str) -> Scored:
    """Admit, receive and score the submission in ``request``.

    Headers are checked first (415 / 413 without reading). The body is received under the
    per-client and per-process upload bounds and on its own clocks; only then does the request
    queue for a scoring slot. Reading and scoring (CPU work) run in a worker thread.
    """
    settings = state.settings
    check_headers(request, settings.max_body_bytes)
    with state.uploads.uploading(client):
        raw = await receive_submission(request, settings.max_body_bytes, timeout_s=settings.upload_timeout_s,
                                       idle_s=settings.upload_idle_timeout_s)
    try:
        async with state.slots.slot():
            return await run_in_threadpool(state.scorer.score, raw)
    finally:
        raw.close()
