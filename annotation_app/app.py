"""FastAPI application of the annotation service. The contract is in docs/annotation.md (and at
``/docs`` / ``/openapi.json`` of a running server); errors follow docs/errors.md.

``create_app(settings)`` builds it; the lifespan opens the study's database and closes it at
shutdown (or uses a ``service`` the caller opened and closes). ``create_app_from_env`` is the
factory for ``uvicorn --factory``.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from psc6k.errors import Psc6kError
from psc6k_web.app import install_web_layer
from psc6k_web.lifespan import lifespan
from psc6k_web.ratelimit import RateLimit

from .routers import admin, clicks, exports, pages, participant
from .service import StudyService
from .settings import AnnotationSettings

#: Replies never stored by a cache: the participant API (session tokens) and the admin API
#: (Prolific ids, exports).
NO_STORE = ("/api/",)


def _opener(opened: StudyService | None):
    """Start-up: open the study's database (or use the caller's ``opened`` service, which the
    caller closes)."""

    def open_service(app: FastAPI):
        if opened is not None:
            return None
        service = StudyService.from_settings(app.state.settings)
        service.clicks.warm_up()
        app.state.service = service

        def close():
            app.state.service = None
            service.close()

        return close

    return open_service


def _without_telemetry() -> dict:
    """FastAPI's native OpenTelemetry hooks off, where this FastAPI has them (``telemetry=``
    exists only in recent releases): they check the global providers on every request, and the
    click route is the hot path of a worker that also plans sessions."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def create_app(settings: AnnotationSettings, *, service: StudyService | None = None) -> FastAPI:
    """The app for the study of ``settings.db_url``, or around an already opened ``service``
    (tests; it stays the caller's to close). Without ``settings.admin_token`` the admin API
    answers 403."""
    app = FastAPI(title="PSC6K annotation service", version="1", lifespan=lifespan(_opener(service)),
                  description="Crowd annotation of PSC6K keypoints. Contract: docs/annotation.md; "
                              "errors: docs/errors.md.", **_without_telemetry())
    app.state.service = service
    app.state.entry_limit = (RateLimit(settings.entry_rate_limit, name="study entry",
                                       storage=settings.rate_limit_storage)
                             if settings.entry_rate_limit else None)
    install_web_layer(app, settings, no_store=NO_STORE, body_limit=settings.max_body_bytes)
    # the click route first: routes are matched in order, and clicks are most of the requests
    for router in (clicks.router, participant.router, pages.router, admin.router, exports.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment (``PSC6K_ANNOT_DB``,
    ``PSC6K_ANNOT_IMAGES``, ``PSC6K_ADMIN_TOKEN``, ``PSC6K_ANNOT_<FIELD>``)."""
    try:
        settings = AnnotationSettings()
    except ValidationError as exc:
        raise Psc6kError(f"annotation server settings from the environment: {exc}") from None
    return create_app(settings)
