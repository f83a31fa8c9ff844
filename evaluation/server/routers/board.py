"""Leaderboard routes: ``POST /submissions``, ``GET /leaderboard`` (JSON) and ``/leaderboard.html``."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse
from pydantic import AfterValidator, StringConstraints

from psc6k.errors import NotFoundError
from psc6k_web.deps import ClientAddress
from psc6k_web.responses import SafeJSONResponse
from psc6k_web.text import SafeLongText, SafeText

from .. import db
from ..deps import AppState, State, Submitter, record_counted, require_quota
from ..html import render_leaderboard
from ..leaderboard import entry_json, rank, server_protocol
from ..models import EntryId, Leaderboard, LeaderboardEntry, Problem, SubmissionReply
from ..openapi_bodies import PROBLEM_RESPONSES, SUBMISSION_REQUEST_BODY
from .score import score_upload

router = APIRouter(tags=["leaderboard"])

SortKey = Literal["pck@0.05", "pck@0.10"]


def _blank_is_none(text: Optional[str]) -> Optional[str]:
    text = text.strip() if text is not None else None
    return text or None


def _http_url(text: Optional[str]) -> Optional[str]:
    if text is not None and not text.lower().startswith(("http://", "https://")):
        raise ValueError("expected an http(s) URL")
    return text


def _text(limit: int, text=SafeText):
    """An optional free-text query parameter: the one text rule, at most ``limit`` characters,
    blank read as absent."""
    return Annotated[Optional[Annotated[text, StringConstraints(max_length=limit)]], AfterValidator(_blank_is_none)]


@router.post(
    "/submissions", response_model=SubmissionReply, openapi_extra=SUBMISSION_REQUEST_BODY,
    responses={**PROBLEM_RESPONSES, 401: {"model": Problem}, 429: {"model": Problem}},
    summary="Score a submission and put it on the leaderboard (needs a token)",
)
async def submit(
    request: Request,
    state: AppState,
    client: ClientAddress,
    token: Submitter,
    method: Annotated[_text(200), Query(description="method name shown on the board (default: the "
                                                    "submission's)")] = None,
    paper_url: Annotated[_text(500), AfterValidator(_http_url),
                         Query(description="http(s) link to the paper or code")] = None,
    encoder: Annotated[_text(200), Query(description="backbone, e.g. ResNet-18")] = None,
    supervision: Optional[Literal["transfer", "retrain", "keypoint"]] = Query(
        None, description="transfer: pre-trained, not retrained on PSC6K; retrain: trained on PSC6K train "
                          "pairs without keypoints; keypoint: trained with keypoint supervision"),
    description: Annotated[_text(2000, SafeLongText), Query(description="free text")] = None,
):
    """Score like ``POST /score`` and store the entry with its metadata and the scorer version.
    Only accepted (scored) submissions count against the token's daily quota."""
    require_quota(token, state)
    scored = await score_upload(request, state, client)
    reply = scored.result
    pck05 = db.finite_or_none(reply["overall"].get("pck@0.05"))
    pck10 = db.finite_or_none(reply["overall"].get("pck@0.10"))
    entry = db.Entry(
        id=db.new_id(), submitter=token.name, method=method or scored.method.strip()[:200] or "unnamed",
        paper_url=paper_url, encoder=encoder, supervision=supervision, description=description,
        source="submitted", split=state.settings.split_name,
        annotations_sha256=state.scorer.annotations_sha256, scorer_version=reply["scorer_version"],
        n_pairs=reply["n_pairs"], pck05=pck05, pck10=pck10, ranked=pck05 is not None and pck10 is not None,
        scores={**reply, "method": str(reply.get("method", ""))[:200]},  # aggregates only if private
    )
    record_counted(state, token, entry)
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
def leaderboard(state: AppState, sort_by: SortKey = Query("pck@0.05", description="ranking metric")):
    """Ranked entries (best first, all on this server's protocol), unranked submissions with the
    reason (missing or non-finite scores, other annotations), and the published numbers not ranked
    here (other protocol, ablations) with theirs. Published numbers carry ``badge: "reported"``,
    their ``citation`` (paper, table, row) and ``protocol``; entries scored here ``"verified here"``."""
    return SafeJSONResponse(jsonable_encoder(_board(state, sort_by)))


@router.get("/leaderboard.html", response_class=HTMLResponse, summary="The leaderboard as a web page")
def leaderboard_html(state: AppState, sort_by: SortKey = Query("pck@0.05")):
    return HTMLResponse(render_leaderboard(jsonable_encoder(_board(state, sort_by))))


@router.get("/submissions/{entry_id}", response_model=LeaderboardEntry, responses={404: {"model": Problem}},
            summary="One leaderboard entry")
def get_submission(entry_id: EntryId, state: AppState):
    entry = db.get_entry(state.engine, entry_id) if len(entry_id) <= 32 else None
    if entry is None or entry.hidden:
        raise NotFoundError(f"no leaderboard entry {entry_id!r}", field="entry_id")
    ranked, unranked = _rank(state)
    my_rank = next((r for r, e in ranked if e.id == entry.id), None)
    reason = next((why for why, e in unranked if e.id == entry.id), None)
    return SafeJSONResponse(jsonable_encoder(entry_json(entry, my_rank, reason, state.settings.private,
                                                        _protocol(state), state.scorer.annotations_sha256)))
