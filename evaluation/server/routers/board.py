"""Leaderboard routes: ``POST /submissions``, ``GET /leaderboard`` (JSON) and ``/leaderboard.html``."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse

from .. import db
from ..responses import SafeJSONResponse, clean_text
from ..deps import State, get_state, require_quota, submitter
from ..html import render_leaderboard
from ..leaderboard import entry_json, rank, server_protocol
from ..models import Leaderboard, LeaderboardEntry, Problem, SubmissionReply
from ..openapi_bodies import PROBLEM_RESPONSES, SUBMISSION_REQUEST_BODY
from .score import score_request

router = APIRouter(tags=["leaderboard"])

SortKey = Literal["pck@0.05", "pck@0.10"]


def _clean(text: Optional[str], field: str, limit: int) -> Optional[str]:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if len(text) > limit:
        raise HTTPException(status_code=422, detail=f"query parameter {field!r}: at most {limit} characters")
    if any(ord(c) < 32 for c in text):
        raise HTTPException(status_code=422, detail=f"query parameter {field!r}: control characters not allowed")
    return text


@router.post(
    "/submissions", response_model=SubmissionReply, openapi_extra=SUBMISSION_REQUEST_BODY,
    responses={**PROBLEM_RESPONSES, 401: {"model": Problem}, 429: {"model": Problem}},
    summary="Score a submission and put it on the leaderboard (needs a token)",
)
async def submit(
    request: Request,
    method: Optional[str] = Query(None, max_length=200,
                                  description="method name shown on the board (default: the submission's)"),
    paper_url: Optional[str] = Query(None, max_length=500, description="http(s) link to the paper or code"),
    encoder: Optional[str] = Query(None, max_length=200, description="backbone, e.g. ResNet-18"),
    supervision: Optional[Literal["transfer", "retrain", "keypoint"]] = Query(
        None, description="transfer: pre-trained, not retrained on PSC6K; retrain: trained on PSC6K train "
                          "pairs without keypoints; keypoint: trained with keypoint supervision"),
    description: Optional[str] = Query(None, max_length=2000, description="free text"),
    state: State = Depends(get_state),
    token: db.Token = Depends(submitter),
):
    """Score like ``POST /score`` and store the entry with its metadata and the scorer version.
    Only accepted (scored) submissions count against the token's daily quota."""
    method = _clean(method, "method", 200)
    paper_url = _clean(paper_url, "paper_url", 500)
    if paper_url is not None and not paper_url.lower().startswith(("http://", "https://")):
        raise HTTPException(status_code=422, detail="query parameter 'paper_url': expected an http(s) URL")
    encoder = _clean(encoder, "encoder", 200)
    description = _clean(description, "description", 2000)
    require_quota(token, state)
    reply = await score_request(request, state)
    scored = request.state.scored
    pck05 = db.finite_or_none(reply["overall"].get("pck@0.05"))
    pck10 = db.finite_or_none(reply["overall"].get("pck@0.10"))
    entry = db.Entry(
        id=db.new_id(), submitter=token.name, method=method or clean_text(scored.method, 200) or "unnamed",
        paper_url=paper_url, encoder=encoder, supervision=supervision, description=description,
        source="submitted", split=state.settings.split_name,
        annotations_sha256=state.scorer.annotations_sha256, scorer_version=reply["scorer_version"],
        n_pairs=reply["n_pairs"], pck05=pck05, pck10=pck10, ranked=pck05 is not None and pck10 is not None,
        scores={**reply, "method": clean_text(str(reply.get("method", "")), 200)},  # aggregates only if private
    )
    try:
        db.record_counted(state.engine, token.id, state.settings.daily_quota, entry)
    except db.QuotaExceeded:
        raise HTTPException(status_code=429, detail="daily quota used up for today (UTC)") from None
    except db.TokenRevoked:
        raise HTTPException(status_code=401, detail="token revoked") from None
    ranked, unranked = _rank(state)
    my_rank = next((r for r, e in ranked if e.id == entry.id), None)
    reason = next((why for why, e in unranked if e.id == entry.id), None)
    left = db.quota_left(state.engine, token, state.settings.daily_quota)
    return SafeJSONResponse({"submission_id": entry.id, **reply, "entry_id": entry.id, "ranked": my_rank is not None,
                         "rank": my_rank, "unranked_reason": reason, "quota_left_today": left})


_PROTOCOLS: dict[tuple[str, bool], tuple[str, dict]] = {}


def _protocol(state: State) -> tuple[str, dict]:
    """The protocol of this server's annotations (computed once per annotation file)."""
    key = (state.scorer.annotations_sha256, state.settings.private)
    if key not in _PROTOCOLS:
        _PROTOCOLS[key] = server_protocol(state.scorer.annotations, *key)
    return _PROTOCOLS[key]


def _rank(state: State, sort_by: str = "pck@0.05"):
    return rank(db.list_entries(state.engine), state.scorer.annotations_sha256, sort_by, _protocol(state)[0])


def _board(state: State, sort_by: str) -> dict:
    ranked, unranked = _rank(state, sort_by)
    private = state.settings.private
    protocol = _protocol(state)
    sha = state.scorer.annotations_sha256

    def as_json(e, r, why):
        return entry_json(e, r, why, private, protocol, sha)

    return {
        "sort_by": sort_by, "private": private, "split": state.settings.split_name,
        "scorer_version": state.scorer.scorer_version, "protocol_id": protocol[0], "protocol": protocol[1],
        "ranked": [as_json(e, r, None) for r, e in ranked],
        "unranked": [as_json(e, None, why) for why, e in unranked if e.source != "paper"],
        "published": [as_json(e, None, why) for why, e in unranked if e.source == "paper"],
    }


@router.get("/leaderboard", response_model=Leaderboard, summary="The leaderboard as JSON")
def leaderboard(sort_by: SortKey = Query("pck@0.05", description="ranking metric"),
                state: State = Depends(get_state)):
    """Ranked entries (best first, all on this server's protocol), unranked submissions with the
    reason (missing or non-finite scores, other annotations), and the published numbers not ranked
    here (other protocol, ablations) with theirs. Published numbers carry ``badge: "reported"``,
    their ``citation`` (paper, table, row) and ``protocol``; entries scored here ``"verified here"``."""
    return SafeJSONResponse(jsonable_encoder(_board(state, sort_by)))


@router.get("/leaderboard.html", response_class=HTMLResponse, summary="The leaderboard as a web page")
def leaderboard_html(sort_by: SortKey = Query("pck@0.05"), state: State = Depends(get_state)):
    return HTMLResponse(render_leaderboard(jsonable_encoder(_board(state, sort_by))))


@router.get("/submissions/{entry_id}", response_model=LeaderboardEntry, responses={404: {"model": Problem}},
            summary="One leaderboard entry")
def get_submission(entry_id: str, state: State = Depends(get_state)):
    entry = db.get_entry(state.engine, entry_id) if len(entry_id) <= 32 else None
    if entry is None or entry.hidden:
        raise HTTPException(status_code=404, detail=f"no leaderboard entry {entry_id!r}")
    ranked, unranked = _rank(state)
    my_rank = next((r for r, e in ranked if e.id == entry.id), None)
    reason = next((why for why, e in unranked if e.id == entry.id), None)
    return SafeJSONResponse(jsonable_encoder(entry_json(entry, my_rank, reason, state.settings.private,
                                                        _protocol(state), state.scorer.annotations_sha256)))
