"""The FastAPI application of ``psc6k serve``.

``create_app(settings)`` for one process (and tests); ``app_from_env()`` is the factory uvicorn
workers call (``--workers N``), reading the settings from ``PSC6K_SERVER_SETTINGS``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles

from psc6k import __version__
from psc6k_web.body_limit import SMALL_BODY_LIMIT, BodySizeLimit
from psc6k_web.errors import install_error_handlers

from . import db
from .deps import State
from .html import STATIC
from .responses import SafeJSONResponse
from .routers import admin, board, meta, score
from .scoring import Scorer
from .seed import seed_entries
from .settings import ServerSettings

log = logging.getLogger("psc6k.server")

#: Paths whose bodies are submissions (capped at ``max_body_bytes`` by the route itself); every
#: other body (admin JSON) is small (``SMALL_BODY_LIMIT``).
SUBMISSION_PATHS = ("/score", "/submissions")


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

    install_error_handlers(app, unavailable_detail="the leaderboard database is unavailable; retry later "
                           "(nothing was stored and no quota was used)")
    app.include_router(score.router)
    app.include_router(board.router)
    app.include_router(admin.router)
    app.include_router(meta.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodySizeLimit, limit=SMALL_BODY_LIMIT, exempt_paths=SUBMISSION_PATHS)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes (``psc6k serve --workers N``)."""
    return create_app(ServerSettings.from_env())


__all__ = ["create_app", "app_from_env", "HTTPException"]
