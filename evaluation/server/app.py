"""The FastAPI application of ``psc6k serve``.

``create_app(settings)`` for one process (and tests); ``app_from_env()`` is the factory uvicorn
workers call (``--workers N``), reading the settings from ``PSC6K_SERVER_SETTINGS``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from psc6k import __version__
from psc6k.errors import Psc6kError

from . import db
from .body import BodyTooLarge
from .deps import State
from .html import STATIC
from .responses import SafeJSONResponse
from .routers import admin, board, meta, score
from .scoring import Scorer
from .seed import seed_entries
from .settings import ServerSettings

log = logging.getLogger("psc6k.server")

#: Paths whose bodies are submissions (capped at ``max_body_bytes`` by the route itself).
SUBMISSION_PATHS = ("/score", "/submissions")
#: Every other body (admin JSON) is small.
SMALL_BODY_LIMIT = 64 * 1024


class BodyLimitMiddleware:
    """Caps request bodies of the non-submission routes (pure ASGI, so it sees the stream)."""

    def __init__(self, app, limit: int = SMALL_BODY_LIMIT):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in SUBMISSION_PATHS:
            return await self.app(scope, receive, send)
        limit = self.limit
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    response = SafeJSONResponse({"detail": f"request body over the limit of {limit} bytes"}, 413)
                    return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body over the limit of {limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where = f"{loc[0]} {'.'.join(loc[1:])!r}" if len(loc) > 1 else (loc[0] if loc else "request")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the application: open (and seed) the database, read the annotations, mount routes."""
    engine = db.make_engine(settings.db_url)
    db.init_db(engine, seed_entries(settings.split_name) if settings.wants_seed() else [])
    scorer = Scorer(settings)
    state = State(settings=settings, engine=engine, scorer=scorer)
    registry = meta.load_registry()
    state.model_scores = meta.load_model_scores(settings.model_scores, list(registry or []))

    app = FastAPI(
        default_response_class=SafeJSONResponse,
        title="PSC6K evaluation server",
        version=__version__,
        description="Scores photo-sketch correspondence submissions by PCK exactly as `psc6k eval` does "
                    "and keeps a leaderboard. See docs/server.md.",
    )
    app.state.psc6k = state

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException):
        return SafeJSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, exc: RequestValidationError):
        return SafeJSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(Psc6kError)
    async def _on_user_error(request: Request, exc: Psc6kError):
        return SafeJSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(OperationalError)
    async def _on_database_down(request: Request, exc: OperationalError):
        log.error("leaderboard database unavailable: %s", exc)
        return SafeJSONResponse({"detail": "the leaderboard database is unavailable; retry later (nothing was "
                                 "stored and no quota was used)"}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(MemoryError)
    async def _on_memory_error(request: Request, exc: MemoryError):
        return SafeJSONResponse({"detail": "request too large to process in memory"}, status_code=413)

    app.include_router(score.router)
    app.include_router(board.router)
    app.include_router(admin.router)
    app.include_router(meta.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimitMiddleware)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes (``psc6k serve --workers N``)."""
    return create_app(ServerSettings.from_env())


__all__ = ["create_app", "app_from_env", "HTTPException"]
