"""Shared request dependencies: the app state, bearer-token and admin authentication."""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from . import db
from .scoring import Scorer
from .settings import ServerSettings

bearer = HTTPBearer(auto_error=False, description="a submitter token (psc6k_...) or the admin token")


@dataclass
class State:
    settings: ServerSettings
    engine: Engine
    scorer: Scorer
    model_scores: dict = field(default_factory=dict)


def get_state(request: Request) -> State:
    return request.app.state.psc6k


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _token_from(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing token: send 'Authorization: Bearer <token>' (ask the server's "
                            "administrator for a token)")
    return credentials.credentials


def submitter(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
              state: State = Depends(get_state)) -> db.Token:
    """The token row of the caller; 401 when missing, unknown or revoked."""
    clear = _token_from(credentials)
    token = db.find_token(state.engine, clear)
    if token is None:
        raise _unauthorized("unknown token")
    if token.revoked_at is not None:
        raise _unauthorized(f"token {token.prefix}... was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC")
    return token


def optional_submitter(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                       state: State = Depends(get_state)) -> db.Token | None:
    """Token of the caller in private mode (required there), None in public mode."""
    if not state.settings.private:
        return None
    return submitter(credentials, state)


def admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
          state: State = Depends(get_state)) -> None:
    expected = state.settings.resolved_admin_token()
    if not expected:
        raise HTTPException(status_code=403, detail="the admin API is disabled: start the server with "
                            "PSC6K_ADMIN_TOKEN set")
    clear = _token_from(credentials)
    if not hmac.compare_digest(clear.encode("utf-8"), expected.encode("utf-8")):
        raise HTTPException(status_code=403, detail="not the admin token")


def quota_of(token: db.Token, settings: ServerSettings) -> int:
    return token.daily_quota if token.daily_quota is not None else settings.daily_quota


def require_quota(token: db.Token, state: State) -> int:
    """Quota left today (> 0), else 429. Checked before reading the body; the insert re-checks
    atomically, so concurrent submissions cannot overrun it."""
    left = db.quota_left(state.engine, token, state.settings.daily_quota)
    if left <= 0:
        raise HTTPException(status_code=429, detail=f"daily quota of {quota_of(token, state.settings)} "
                            "accepted submissions used up for today (UTC); failed validations do not count",
                            headers={"Retry-After": str(_seconds_to_midnight())})
    return left


def _seconds_to_midnight() -> int:
    now = db.utcnow()
    return max(1, int((db.utc_day_start(now) + dt.timedelta(days=1) - now).total_seconds()))
