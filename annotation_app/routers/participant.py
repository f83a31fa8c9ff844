"""Study and session routes of the participant page (everything but clicks)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import func, select

from psc6k_web.errors import error_responses

from .. import db
from ..deps import Service, SessionToken, Store, limit_entry
from ..models import Completion, Health, Id, SessionOut, SessionStart, StudyOut, Which
from .pages import image_response

router = APIRouter(prefix="/api", tags=["participant"])


def session_response(data: dict, status_code: int = 200) -> Response:
    """A session body, checked against :class:`SessionOut` and rendered to JSON by pydantic in
    one step (half the CPU of validating, dumping to Python and encoding with ``json``; a
    session has ~127 trials and the worker serving it also serves clicks)."""
    return Response(SessionOut.model_validate(data).model_dump_json(), status_code=status_code,
                    media_type="application/json")


@router.get("/study", response_model=StudyOut)
def get_study(service: Service):
    """Title, consent and instruction texts, and practice trials with known answers."""
    return service.info.study()


@router.get("/study/practice/{practice_id}/{which}", responses=error_responses(404))
def practice_image(practice_id: Id, which: Which, service: Service):
    return image_response(service.info.practice_image(practice_id, which))


@router.post("/sessions", response_model=SessionOut, status_code=201, dependencies=[Depends(limit_entry)],
             responses={200: {"model": SessionOut, "description": "resumed"}, **error_responses(403, 409, 429)})
def start_session(body: SessionStart, service: Service):
    """Start a session, or resume the one this PROLIFIC_PID already has (never a second plan).
    201 when created, 200 when resumed; 403 without the study link's key; 409 ``reason:
    study_full`` when no slot is open; 429 past the per-client limit (when configured)."""
    data, created = service.sessions.start(body.prolific_pid, body.study_id, body.session_id, body.link_key)
    return session_response(data, 201 if created else 200)


@router.get("/sessions/{token}", response_model=SessionOut, responses=error_responses(404))
def get_session(token: SessionToken, service: Service):
    """The same body as POST /api/sessions (resume after a reload)."""
    return session_response(service.sessions.body(token))


@router.post("/sessions/{token}/complete", response_model=Completion, responses=error_responses(404, 409))
def complete(token: SessionToken, service: Service):
    """Completion code and redirect URL, only once the server holds every trial."""
    return service.sessions.complete(token)


@router.get("/sessions/{token}/images/{trial_id}/{which}", responses=error_responses(404))
def trial_image(trial_id: Id, which: Which, token: SessionToken,
                service: Service):
    return image_response(service.info.trial_image(token, trial_id, which))


@router.get("/health", response_model=Health, tags=["meta"])
def health(store: Store):
    """The study database answers."""
    with store.read.connect() as conn:
        n = conn.execute(select(func.count()).select_from(db.sessions)).scalar_one()
    return {"status": "ok", "sessions": n}
