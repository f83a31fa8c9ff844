"""Request dependencies of the scoring server (``Annotated`` aliases): the app state, its
settings, submitter tokens and their quota. Admin authentication and the client address are
the web layer's (:mod:`psc6k_web.deps`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.engine import Engine

from psc6k.errors import AuthenticationError, RateLimitedError, UnavailableError
from psc6k_web.auth import bearer
from psc6k_web.deps import get_settings
from psc6k_web.uploads import UploadGate, WorkSlots

from . import db
from .scoring import ScoringService
from .settings import ServerSettings


@dataclass
class State:
    """What the lifespan opened for requests."""

    settings: ServerSettings
    engine: Engine
    scorer: ScoringService
    uploads: UploadGate
    slots: WorkSlots
    model_scores: dict = field(default_factory=dict)


def get_state(request: Request) -> State:
    state = getattr(request.app.state, "psc6k", None)
    if state is None:  # a request before the lifespan opened the database
        raise UnavailableError("the server is starting; retry in a moment")
    return state


AppState = Annotated[State, Depends(get_state)]
Settings = Annotated[ServerSettings, Depends(get_settings)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _token_from(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("missing token: send 'Authorization: Bearer <token>' (ask the server's "
                                  "administrator for a token)")
    return credentials.credentials


def submitter(credentials: Credentials, state: AppState) -> db.Token:
    """The token row of the caller; 401 when missing, unknown or revoked."""
    clear = _token_from(credentials)
    token = db.find_token(state.engine, clear)
    if token is None:
        raise AuthenticationError("unknown token")
    if token.revoked_at is not None:
        raise AuthenticationError(f"token {token.prefix}... was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC")
    return token


def optional_submitter(credentials: Credentials, state: AppState) -> db.Token | None:
    """Token of the caller in private mode (required there), None in public mode."""
    if not state.settings.private:
        return None
    return submitter(credentials, state)


Submitter = Annotated[db.Token, Depends(submitter)]
OptionalSubmitter = Annotated[db.Token | None, Depends(optional_submitter)]


def quota_of(token: db.Token, settings: ServerSettings) -> int:
    return token.daily_quota if token.daily_quota is not None else settings.daily_quota


def quota_used_up(token: db.Token, settings: ServerSettings) -> RateLimitedError:
    return RateLimitedError(f"daily quota of {quota_of(token, settings)} accepted submissions used up for today "
                            "(UTC); failed validations do not count", retry_after=_seconds_to_midnight())


def require_quota(token: db.Token, state: State) -> int:
    """Quota left today (> 0), else 429. Checked before reading the body; the insert re-checks
    atomically, so concurrent submissions cannot overrun it."""
    left = db.quota_left(state.engine, token, state.settings.daily_quota)
    if left <= 0:
        raise quota_used_up(token, state.settings)
    return left


def record_counted(state: State, token: db.Token, row) -> None:
    """Store ``row`` counted against ``token``'s quota (429 when used up meanwhile, 401 revoked)."""
    try:
        db.record_counted(state.engine, token.id, state.settings.daily_quota, row)
    except db.QuotaExceeded:
        raise quota_used_up(token, state.settings) from None
    except db.TokenRevoked:
        raise AuthenticationError("token revoked") from None


def _seconds_to_midnight() -> int:
    now = db.utcnow()
    return max(1, int((db.utc_day_start(now) + dt.timedelta(days=1) - now).total_seconds()))
