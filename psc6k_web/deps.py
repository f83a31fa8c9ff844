"""``Annotated`` dependencies both apps' routers use: the app's settings, the client address,
admin authentication. Tests replace any of them with ``app.dependency_overrides``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .auth import require_admin
from .ratelimit import client_address
from .settings import WebSettings


def get_settings(request: Request) -> WebSettings:
    """The settings the app was made with (``app.state.settings``)."""
    return request.app.state.settings


#: The app's settings (an app narrows the type with its own alias over :func:`get_settings`).
Settings = Annotated[WebSettings, Depends(get_settings)]
#: The client's address (:func:`psc6k_web.ratelimit.client_address`).
ClientAddress = Annotated[str, Depends(client_address)]
#: Admin authentication: ``dependencies=[AdminAuth]`` on a router or a route.
AdminAuth = Depends(require_admin)
