"""Configuration of one annotation server process (``psc6k annotate serve``).

A pydantic settings object: the command line builds it and hands it to :func:`create_app`
(also in each worker process, see ``annotation_app/_server.py``); ``uvicorn --factory
annotation_app.app:create_app_from_env`` reads the same fields from the environment instead
(``PSC6K_ANNOT_DB``, ``PSC6K_ANNOT_IMAGES``, ``PSC6K_ADMIN_TOKEN``, ``PSC6K_ANNOT_<FIELD>``).
The study itself (texts, leases, link key) lives in the database, written by ``annotate init``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from psc6k_web.body_limit import SMALL_BODY_LIMIT


class AnnotationSettings(BaseSettings):
    """Everything a server process needs besides the study in the database.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL or SQLite file path of a study made by ``psc6k annotate init``.
    image_root : str, optional
        Override the images root stored at init (the Sketchy folder moved).
    admin_token : str, optional
        Bearer token of the admin API and dashboard; without one the admin API answers 403.
    sqlite_synchronous : "FULL" or "NORMAL"
        SQLite only: FULL fsyncs every commit (a stored click survives a power loss); NORMAL
        survives a crash of the server (kill -9) but not of the machine.
    max_body_bytes : int
        Largest request body (bytes) -> 413 beyond.
    pool_size : int
        Database connections per engine and process.
    entry_rate_limit : str, optional
        Per-client limit of ``POST /api/sessions`` in the notation of the ``limits`` library
        (``"20/minute"``, ``"5/second;100/hour"``); off when unset.
    rate_limit_storage : str
        ``limits`` storage URI of the counters: ``memory://`` (per process) or a shared one
        (``redis://host:6379``) when several workers must share them.
    trusted_proxy_header : str, optional
        Header in which the reverse proxy in front of the server puts the client address
        (``X-Forwarded-For``, ``X-Real-IP``): only when set does the rate limit key on it (its
        last entry, the one the proxy appended); otherwise on the TCP peer address.
    """

    model_config = SettingsConfigDict(env_prefix="PSC6K_ANNOT_", extra="ignore", populate_by_name=True,
                                      frozen=True)

    db_url: str = Field(validation_alias=AliasChoices("db_url", "PSC6K_ANNOT_DB", "PSC6K_ANNOT_DB_URL"))
    image_root: str | None = Field(None, validation_alias=AliasChoices("image_root", "PSC6K_ANNOT_IMAGES"))
    admin_token: str | None = Field(None, validation_alias=AliasChoices("admin_token", "PSC6K_ADMIN_TOKEN"))
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_body_bytes: int = Field(SMALL_BODY_LIMIT, gt=0)
    pool_size: int = Field(10, ge=1, le=1000)
    entry_rate_limit: str | None = None
    rate_limit_storage: str = "memory://"
    trusted_proxy_header: str | None = None

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v

    @field_validator("admin_token", "image_root", "entry_rate_limit", "trusted_proxy_header", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("entry_rate_limit")
    @classmethod
    def _parse_limit(cls, v):
        if v is not None:
            from limits import parse_many

            try:
                parse_many(v)
            except ValueError:
                raise ValueError(f"{v!r} is not a rate limit such as '20/minute' or '5/second;100/hour'") from None
        return v
