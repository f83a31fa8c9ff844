"""``POST /score``: score a submission, store nothing but an audit row."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from .. import db
from ..responses import SafeJSONResponse
from ..deps import State, get_state, optional_submitter, require_quota
from ..models import Problem, ScoreReply
from ..openapi_bodies import PROBLEM_RESPONSES, SUBMISSION_REQUEST_BODY

router = APIRouter(tags=["scoring"])


@router.post(
    "/score", response_model=ScoreReply, openapi_extra=SUBMISSION_REQUEST_BODY,
    responses={**PROBLEM_RESPONSES, 401: {"model": Problem}, 429: {"model": Problem}},
    summary="Score a submission (same JSON as `psc6k eval --json`)",
)
async def score(request: Request, state: State = Depends(get_state),
                token: db.Token | None = Depends(optional_submitter)):
    """Validate and score a submission with the code of ``psc6k eval``; the reply is its JSON
    plus ``submission_id``. In private mode a token is required, each accepted scoring counts
    against its daily quota, and only aggregates are returned."""
    if token is not None:
        require_quota(token, state)
    reply = await score_request(request, state)
    row = db.Scoring(id=db.new_id(), kind=reply["kind"], n_pairs=reply["n_pairs"],
                     pck05=db.finite_or_none(reply["overall"].get("pck@0.05")),
                     pck10=db.finite_or_none(reply["overall"].get("pck@0.10")),
                     scorer_version=reply["scorer_version"])
    try:
        if token is not None:
            db.record_counted(state.engine, token.id, state.settings.daily_quota, row)
        else:
            db.record(state.engine, row)
    except db.QuotaExceeded:
        raise HTTPException(status_code=429, detail="daily quota used up for today (UTC)") from None
    except db.TokenRevoked:
        raise HTTPException(status_code=401, detail="token revoked") from None
    return SafeJSONResponse({"submission_id": row.id, **reply})


async def score_request(request: Request, state: State) -> dict:
    """Read the body under the size caps and score it; returns the (private-filtered) result."""
    scored = await state.scorer.score_request(request)
    request.state.scored = scored
    return scored.result
