"""What both apps install on their FastAPI app, in one call: the error contract, the body cap,
security headers, ``HEAD`` on ``GET`` routes, the settings and the admin guard."""

from __future__ import annotations

from fastapi import FastAPI

from .auth import AdminGuard
from .body_limit import SMALL_BODY_LIMIT, BodySizeLimit
from .errors import install_error_handlers
from .headers import HeadAsGet, SecurityHeaders
from .settings import WebSettings


def install_web_layer(app: FastAPI, settings: WebSettings, *, no_store: tuple[str, ...],
                      body_limit: int = SMALL_BODY_LIMIT, body_limit_exempt: tuple[str, ...] = (),
                      **error_options) -> None:
    """Make ``app`` one of this project's web services.

    Parameters
    ----------
    app : FastAPI
        The app, before it serves.
    settings : WebSettings
        Its settings (kept as ``app.state.settings``; the dependencies read them there).
    no_store : tuple of str
        Path prefixes whose replies get ``Cache-Control: no-store`` (admin, participant APIs).
    body_limit, body_limit_exempt
        Largest request body of every route but the exempt paths (which cap their own).
    **error_options
        Passed to :func:`psc6k_web.errors.install_error_handlers`.
    """
    app.state.settings = settings
    app.state.admin_guard = AdminGuard(settings)
    install_error_handlers(app, **error_options)
    # added last = outermost: headers go on every reply, the 413 of the body cap included
    app.add_middleware(BodySizeLimit, limit=body_limit, exempt_paths=body_limit_exempt)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders, no_store=no_store)
