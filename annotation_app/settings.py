"""Configuration of one annotation server process (``psc6k annotate serve``).

A pydantic settings object: the command line builds it and hands it to :func:`create_app`
(also in each worker process, see ``psc6k_web/server.py``); ``uvicorn --factory
annotation_app.app:create_app_from_env`` reads the same fields from the environment instead
(``PSC6K_ANNOT_DB``, ``PSC6K_ANNOT_IMAGES``, ``PSC6K_ADMIN_TOKEN``, ``PSC6K_ANNOT_<FIELD>``).
The study itself (texts, leases, link key) lives in the database, written by ``annotate init``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from psc6k_web.body_limit import SMALL_BODY_LIMIT
from psc6k_web.settings import WebSettings, check_rate_limit


class AnnotationSettings(WebSettings):
    """Everything a server process needs besides the study in the database (and the web
    layer's fields: ``admin_token``, ``trusted_proxies``, ``admin_failure_limit``,
    ``rate_limit_storage``, see :class:`psc6k_web.settings.WebSettings`).

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL or SQLite file path of a study made by ``psc6k annotate init``.
    image_root : str, optional
        Override the images root stored at init (the Sketchy folder moved).
    sqlite_synchronous : "FULL" or "NORMAL"
        SQLite only: FULL fsyncs every commit (a stored click survives a power loss); NORMAL
        survives a crash of the server (kill -9) but not of the machine.
    max_body_bytes : int
        Largest request body (bytes) -> 413 beyond.
    pool_size : int
        Database connections per engine and process.
    entry_rate_limit : str, optional
        Per-client limit of ``POST /api/sessions`` in the notation of the ``limits`` library
        (``"20/minute"``, ``"5/second;100/hour"``) keyed on the client address; off when unset.
    """

    model_config = SettingsConfigDict(env_prefix="PSC6K_ANNOT_", frozen=True)

    db_url: str = Field(validation_alias=AliasChoices("db_url", "PSC6K_ANNOT_DB", "PSC6K_ANNOT_DB_URL"))
    image_root: str | None = Field(None, validation_alias=AliasChoices("image_root", "PSC6K_ANNOT_IMAGES"))
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_body_bytes: int = Field(SMALL_BODY_LIMIT, gt=0)
    pool_size: int = Field(10, ge=1, le=1000)
    entry_rate_limit: str | None = None

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v

    @field_validator("image_root", "entry_rate_limit", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("entry_rate_limit")
    @classmethod
    def _parse_limit(cls, v):
        return check_rate_limit(v)
