"""Admin routes (``Authorization: Bearer $PSC6K_ADMIN_TOKEN``): tokens and entry visibility,
plus ``GET /me`` for submitters."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.encoders import jsonable_encoder

from .. import db
from ..responses import SafeJSONResponse
from ..deps import State, admin, get_state, quota_of, submitter
from ..models import EntryPatch, Problem, TokenCreate, TokenCreated, TokenInfo, WhoAmI

router = APIRouter(tags=["admin"])
AUTH_ERRORS = {401: {"model": Problem}, 403: {"model": Problem}}


def token_info(token: db.Token) -> dict:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "daily_quota": token.daily_quota,
            "created_at": token.created_at, "revoked_at": token.revoked_at}


@router.post("/admin/tokens", response_model=TokenCreated, status_code=201, responses=AUTH_ERRORS,
             dependencies=[Depends(admin)], summary="Create a submitter token (shown once)")
def create_token(body: TokenCreate, state: State = Depends(get_state)):
    token, clear = db.create_token(state.engine, body.name, body.daily_quota)
    return SafeJSONResponse(jsonable_encoder({**token_info(token), "token": clear}), status_code=201)


@router.get("/admin/tokens", response_model=list[TokenInfo], responses=AUTH_ERRORS,
            dependencies=[Depends(admin)], summary="List tokens (never the tokens themselves)")
def list_tokens(state: State = Depends(get_state)):
    return SafeJSONResponse(jsonable_encoder([token_info(t) for t in db.list_tokens(state.engine)]))


@router.delete("/admin/tokens/{token_id}", response_model=TokenInfo,
               responses={**AUTH_ERRORS, 404: {"model": Problem}},
               dependencies=[Depends(admin)], summary="Revoke a token")
def revoke_token(token_id: int, state: State = Depends(get_state)):
    if not 0 < token_id < 2**31:
        raise HTTPException(status_code=404, detail=f"no token with id {token_id}")
    token = db.revoke_token(state.engine, token_id)
    if token is None:
        raise HTTPException(status_code=404, detail=f"no token with id {token_id}")
    return SafeJSONResponse(jsonable_encoder(token_info(token)))


@router.patch("/admin/entries/{entry_id}", responses={**AUTH_ERRORS, 404: {"model": Problem}},
              dependencies=[Depends(admin)], summary="Hide or show a leaderboard entry")
def patch_entry(entry_id: str, body: EntryPatch, state: State = Depends(get_state)) -> dict:
    entry = db.set_hidden(state.engine, entry_id, body.hidden) if len(entry_id) <= 32 else None
    if entry is None:
        raise HTTPException(status_code=404, detail=f"no leaderboard entry {entry_id!r}")
    return {"id": entry.id, "hidden": entry.hidden}


@router.get("/me", response_model=WhoAmI, responses={401: {"model": Problem}}, tags=["leaderboard"],
            summary="The caller's token and quota left today")
def whoami(token: db.Token = Depends(submitter), state: State = Depends(get_state)):
    return {"id": token.id, "name": token.name, "daily_quota": quota_of(token, state.settings),
            "quota_left_today": db.quota_left(state.engine, token, state.settings.daily_quota)}
