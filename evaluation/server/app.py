"""The FastAPI application of ``psc6k serve``.

``create_app(settings)`` builds the app; its lifespan opens (and seeds) the leaderboard database
and reads the annotations at start-up, and closes the database at shutdown.
``app_from_env()`` is the factory uvicorn workers call (``--workers N``), reading the settings
from ``PSC6K_SERVE_*`` environment variables (:meth:`ServerSettings.to_env`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from psc6k import __version__
from psc6k.errors import Psc6kError
from psc6k_web.app import install_web_layer
from psc6k_web.lifespan import lifespan
from psc6k_web.responses import SafeJSONResponse
from psc6k_web.uploads import UploadGate, WorkSlots

from . import db
from .deps import State
from .html import STATIC
from .routers import admin, board, meta, score
from .scoring import ScoringService
from .seed import seed_entries
from .settings import ServerSettings

log = logging.getLogger("psc6k.server")

#: Paths whose bodies are submissions (capped at ``max_body_bytes`` by the route itself); every
#: other body (admin JSON) is small (``SMALL_BODY_LIMIT``).
SUBMISSION_PATHS = ("/score", "/submissions")
#: Replies never stored by a cache: tokens, quotas, a submitter's scores.
NO_STORE = ("/admin", "/me", "/score", "/submissions")


def open_state(app: FastAPI):
    """Start-up: open (and seed) the database, read the annotations; returns the closer."""
    settings: ServerSettings = app.state.settings
    engine = db.make_engine(settings.db_url)
    db.init_db(engine, seed_entries(settings.split_name) if settings.wants_seed() else [])
    registry = meta.load_registry()
    app.state.psc6k = State(
        settings=settings, engine=engine, scorer=ScoringService(settings),
        uploads=UploadGate(settings.max_uploads_per_client, settings.max_uploads),
        slots=WorkSlots(settings.max_concurrent_scoring, settings.max_pending_scoring),
        model_scores=meta.load_model_scores(settings.model_scores, list(registry or [])))

    def close():
        app.state.psc6k = None
        engine.dispose()

    return close


def create_app(settings: ServerSettings) -> FastAPI:
    """The application of ``settings`` (routes mounted; the database opens in the lifespan)."""
    app = FastAPI(
        default_response_class=SafeJSONResponse,
        title="PSC6K evaluation server",
        version=__version__,
        description="Scores photo-sketch correspondence submissions by PCK exactly as `psc6k eval` does "
                    "and keeps a leaderboard. See docs/server.md; errors: docs/errors.md.",
        lifespan=lifespan(open_state),
    )
    app.state.psc6k = None
    install_web_layer(app, settings, no_store=NO_STORE, body_limit_exempt=SUBMISSION_PATHS,
                      unavailable_detail="the leaderboard database is unavailable; retry later "
                                         "(nothing was stored and no quota was used)")
    app.include_router(score.router)
    app.include_router(board.router)
    app.include_router(admin.router)
    app.include_router(meta.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes (``psc6k serve --workers N``)."""
    try:
        settings = ServerSettings()
    except ValidationError as exc:
        raise Psc6kError(f"scoring server settings from the environment (PSC6K_SERVE_*): {exc}") from None
    return create_app(settings)


__all__ = ["create_app", "app_from_env"]
