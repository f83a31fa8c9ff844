"""Admin authentication of both apps: ``Authorization: Bearer <PSC6K_ADMIN_TOKEN>``.

One dependency (:func:`require_admin`, the :data:`psc6k_web.deps.Admin` alias): admin disabled
(no token configured) is 403 ``forbidden``; a missing or wrong token is 401 ``unauthorized``
with ``WWW-Authenticate: Bearer``. Tokens are compared in constant time. Failures are counted per
client address (``admin_failure_limit``, e.g. 10 a minute); past the limit every admin request
of that address is 429 with ``Retry-After`` until the window has passed, the right token
included, so guessing gains nothing. Each failure is logged with the address and the path,
never with what was sent.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from psc6k.errors import AuthenticationError, PermissionDeniedError

from .ratelimit import RateLimit, client_address
from .settings import WebSettings

log = logging.getLogger("psc6k.web.auth")

#: The bearer scheme (documented in OpenAPI); never refuses by itself.
bearer = HTTPBearer(auto_error=False, description="a submitter token (psc6k_...) or the admin token")

ADMIN_HELP = "send the header 'Authorization: Bearer <PSC6K_ADMIN_TOKEN>'"


class AdminGuard:
    """The admin token check with its per-address failure throttle (one per app)."""

    def __init__(self, settings: WebSettings):
        self.expected = settings.admin_token
        self.failures = RateLimit(settings.admin_failure_limit, name="failed admin authentications",
                                  storage=settings.rate_limit_storage)

    def check(self, given: str | None, address: str, path: str) -> None:
        """Pass when ``given`` is the admin token; raise 403 / 429 / 401 otherwise."""
        if not self.expected:
            raise PermissionDeniedError("the admin API is disabled: start the server with PSC6K_ADMIN_TOKEN set")
        self.failures.check_key(address)
        if given and hmac.compare_digest(given.encode("utf-8", "replace"), self.expected.encode("utf-8")):
            return
        log.warning("admin authentication failed from %s on %s (%s)", address, path,
                    "no bearer token" if not given else "wrong token")
        self.failures.hit_key(address)
        raise AuthenticationError(f"missing or wrong admin token: {ADMIN_HELP}")


def require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The admin dependency of both apps (see the module); the guard is the app's
    (``app.state.admin_guard``, made by :func:`psc6k_web.app.install_web_layer`)."""
    given = credentials.credentials if credentials is not None else None
    request.app.state.admin_guard.check(given, client_address(request), request.url.path)
