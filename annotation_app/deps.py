"""Request dependencies of the annotation app (``Annotated`` aliases): settings, the study
service, its database store, session tokens and the study-entry rate limit. Admin
authentication and the client address are the web layer's (:mod:`psc6k_web.deps`). Tests
replace any of them with ``app.dependency_overrides``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from psc6k.errors import NotFoundError, UnavailableError
from psc6k_web.deps import ClientAddress, get_settings

from .service import StudyService, StudyStore
from .settings import AnnotationSettings

TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")


async def get_service(request: Request) -> StudyService:
    service = getattr(request.app.state, "service", None)
    if service is None:  # requests before the lifespan opened the study
        raise UnavailableError("the study is not open yet; retry in a moment")
    return service


async def get_store(service: Annotated[StudyService, Depends(get_service)]) -> StudyStore:
    """The study's database (engines, transactions)."""
    return service.store


async def session_token(token: str) -> str:
    """A path's session token, refused before any database work when it cannot be one."""
    if not TOKEN_RE.match(token):
        raise NotFoundError("unknown session token (start again from the study link)", field="token")
    return token


def limit_entry(request: Request, client: ClientAddress) -> None:
    """The per-client limit of study entry (``entry_rate_limit``), when configured."""
    limiter = getattr(request.app.state, "entry_limit", None)
    if limiter is not None:
        limiter.hit_key(client)


Settings = Annotated[AnnotationSettings, Depends(get_settings)]
Service = Annotated[StudyService, Depends(get_service)]
Store = Annotated[StudyStore, Depends(get_store)]
SessionToken = Annotated[str, Depends(session_token)]
