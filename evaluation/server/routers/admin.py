"""Admin routes (``Authorization: Bearer $PSC6K_ADMIN_TOKEN``, the web layer's one admin
dependency): tokens and entry visibility, plus ``GET /me`` for submitters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.encoders import jsonable_encoder

from psc6k.errors import NotFoundError
from psc6k_web.deps import AdminAuth
from psc6k_web.responses import SafeJSONResponse

from .. import db
from ..deps import AppState, Submitter, quota_of
from ..models import EntryId, EntryPatch, Problem, TokenCreate, TokenCreated, TokenInfo, WhoAmI

router = APIRouter(tags=["admin"])
AUTH_ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}}
admin = APIRouter(tags=["admin"], prefix="/admin", dependencies=[AdminAuth], responses=AUTH_ERRORS)


def token_info(token: db.Token) -> dict:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "daily_quota": token.daily_quota,
            "created_at": token.created_at, "revoked_at": token.revoked_at}


@admin.post("/tokens", response_model=TokenCreated, status_code=201, summary="Create a submitter token (shown once)")
def create_token(body: TokenCreate, state: AppState):
    token, clear = db.create_token(state.engine, body.name, body.daily_quota)
    return SafeJSONResponse(jsonable_encoder({**token_info(token), "token": clear}), status_code=201)


@admin.get("/tokens", response_model=list[TokenInfo], summary="List tokens (never the tokens themselves)")
def list_tokens(state: AppState):
    return SafeJSONResponse(jsonable_encoder([token_info(t) for t in db.list_tokens(state.engine)]))


@admin.delete("/tokens/{token_id}", response_model=TokenInfo, responses={404: {"model": Problem}},
              summary="Revoke a token")
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], state: AppState):
    token = db.revoke_token(state.engine, token_id)
    if token is None:
        raise NotFoundError(f"no token with id {token_id}", field="token_id")
    return SafeJSONResponse(jsonable_encoder(token_info(token)))


@admin.patch("/entries/{entry_id}", responses={404: {"model": Problem}}, summary="Hide or show a leaderboard entry")
def patch_entry(entry_id: EntryId, body: EntryPatch, state: AppState) -> dict:
    entry = db.set_hidden(state.engine, entry_id, body.hidden) if len(entry_id) <= 32 else None
    if entry is None:
        raise NotFoundError(f"no leaderboard entry {entry_id!r}", field="entry_id")
    return {"id": entry.id, "hidden": entry.hidden}


@router.get("/me", response_model=WhoAmI, responses={401: {"model": Problem}}, tags=["leaderboard"],
            summary="The caller's token and quota left today")
def whoami(token: Submitter, state: AppState):
    return {"id": token.id, "name": token.name, "daily_quota": quota_of(token, state.settings),
            "quota_left_today": db.quota_left(state.engine, token, state.settings.daily_quota)}


router.include_router(admin)
