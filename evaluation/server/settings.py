"""Configuration of one server process (``psc6k serve``).

A pydantic settings object (:class:`psc6k_web.settings.WebSettings`): ``psc6k serve`` builds it
from its flags; worker processes (``--workers N``) rebuild it from the environment, where the
command put each field as ``PSC6K_SERVE_<FIELD>`` (:meth:`~psc6k_web.settings.WebSettings.to_env`);
``PSC6K_ADMIN_TOKEN`` is the admin token.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from psc6k_web.settings import WebSettings

ENV_PREFIX = "PSC6K_SERVE_"
ENV_ADMIN_TOKEN = "PSC6K_ADMIN_TOKEN"

MB = 1024 * 1024


class ServerSettings(WebSettings):
    """Everything a server process needs to know (and :class:`WebSettings`' fields).

    Parameters
    ----------
    annotations : str
        Path of the ground truth (``test_pairs_ps.csv`` or ``test_pairs_st.csv``).
    db_url : str
        SQLAlchemy URL of the leaderboard database (SQLite file by default; PostgreSQL
        ``postgresql+psycopg://...`` when several workers share it).
    private : bool
        Hidden split: replies carry only aggregate numbers (overall, per direction, CI, counts),
        never per-category or per-pair output, and ``POST /score`` needs a token and counts
        against its quota (otherwise it would be an unlimited oracle on the hidden keypoints).
    max_body_bytes : int
        Largest request body accepted by the scoring endpoints (bytes on the wire) -> 413 beyond.
    max_decompressed_bytes : int
        Largest submission after gzip / zip decompression -> 413 beyond.
    max_flow_side : int
        Largest flow height / width accepted -> 413 beyond (``psc6k.submission.ReadLimits``).
    max_concurrent_scoring : int
        Scorings running at once in this process (each holds a parsed submission in memory).
    max_pending_scoring : int
        Requests allowed to wait for a scoring slot; beyond, 503 with ``Retry-After``.
    upload_timeout_s : float
        Longest time a body may take to arrive, from the first byte of the request -> 408 beyond.
        Uploads never hold a scoring slot: a request queues for one only once its body is in.
    upload_idle_timeout_s : float
        Longest pause without a byte while a body arrives -> 408 beyond.
    max_uploads_per_client : int
        Bodies being received at once from one client address -> 429 beyond (the address is the
        TCP peer unless ``trusted_proxies`` names it: see docs/server.md).
    max_uploads : int
        Bodies being received at once in this process -> 503 beyond.
    daily_quota : int
        Default number of accepted leaderboard submissions per token per UTC day.
    model_scores : str or None
        JSON file with scores of the model-zoo checkpoints (``GET /models``): either one
        ``psc6k eval --json`` result (for the first model) or ``{model_name: result}``.
    n_bootstrap, seed : int
        Passed to :func:`psc6k.pck.evaluate` (same defaults as ``psc6k eval``).
    split_name : str
        Label stored with every leaderboard entry (e.g. ``test`` or ``hidden``).
    seed_published : bool
        Put the paper's published numbers on the board (public mode only).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    annotations: str
    db_url: str = "sqlite:///psc6k_leaderboard.sqlite"
    private: bool = False
    max_body_bytes: int = Field(200 * MB, gt=0)
    max_decompressed_bytes: int = Field(1024 * MB, gt=0)
    max_flow_side: int = Field(256, ge=2)
    max_concurrent_scoring: int = Field(2, ge=1)
    max_pending_scoring: int = Field(32, ge=0)
    upload_timeout_s: float = Field(300.0, gt=0)
    upload_idle_timeout_s: float = Field(30.0, gt=0)
    max_uploads_per_client: int = Field(4, ge=1)
    max_uploads: int = Field(256, ge=1)
    daily_quota: int = Field(5, ge=0)
    model_scores: str | None = None
    n_bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    split_name: str = "test"
    seed_published: bool = True

    def wants_seed(self) -> bool:
        """Seed the paper's numbers? They were measured on the public test split, so never on a
        private (hidden) one."""
        return self.seed_published and not self.private
