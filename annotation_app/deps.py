"""Request dependencies of the annotation app: settings, the study service, its database
store, admin authentication and the study-entry rate limit. Tests replace any of them with
``app.dependency_overrides``."""

from __future__ import annotations

import hmac
import re

from fastapi import Depends, Request

from psc6k.errors import AuthenticationError, NotFoundError, PermissionDeniedError, UnavailableError

from .service import StudyService, StudyStore
from .settings import AnnotationSettings

TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")


async def get_settings(request: Request) -> AnnotationSettings:
    return request.app.state.settings


async def get_service(request: Request) -> StudyService:
    service = getattr(request.app.state, "service", None)
    if service is None:  # requests before the lifespan opened the study
        raise UnavailableError("the study is not open yet; retry in a moment")
    return service


async def get_store(service: StudyService = Depends(get_service)) -> StudyStore:
    """The study's database (engines, transactions)."""
    return service.store


async def session_token(token: str) -> str:
    """A path's session token, refused before any database work when it cannot be one."""
    if not TOKEN_RE.match(token):
        raise NotFoundError("unknown session token (start again from the study link)", field="token")
    return token


async def require_admin(request: Request, settings: AnnotationSettings = Depends(get_settings)) -> None:
    """``Authorization: Bearer <admin token>``, compared in constant time."""
    expected = settings.admin_token
    if not expected:
        raise PermissionDeniedError("the admin API is disabled: start the server with PSC6K_ADMIN_TOKEN set")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AuthenticationError("admin routes need the header 'Authorization: Bearer <PSC6K_ADMIN_TOKEN>'")


def limit_entry(request: Request) -> None:
    """The per-client limit of study entry (``entry_rate_limit``), when configured."""
    limiter = getattr(request.app.state, "entry_limit", None)
    if limiter is not None:
        limiter.hit(request)
