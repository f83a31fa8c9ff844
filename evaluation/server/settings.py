"""Configuration of one server process.

Settings travel to uvicorn worker processes as JSON in the environment variable
``PSC6K_SERVER_SETTINGS`` (several workers cannot share Python objects), hence the plain
dataclass with JSON-friendly fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

ENV_SETTINGS = "PSC6K_SERVER_SETTINGS"
ENV_ADMIN_TOKEN = "PSC6K_ADMIN_TOKEN"

MB = 1024 * 1024


@dataclass
class ServerSettings:
    """Everything a server process needs to know.

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
        Bodies being received at once from one client address -> 429 beyond (behind a reverse
        proxy every client has the proxy's address: see docs/server.md).
    max_uploads : int
        Bodies being received at once in this process -> 503 beyond.
    daily_quota : int
        Default number of accepted leaderboard submissions per token per UTC day.
    admin_token : str or None
        Token of the administrator (create / revoke tokens). Read from ``PSC6K_ADMIN_TOKEN``
        when not given; without it the admin API answers 403.
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

    annotations: str
    db_url: str = "sqlite:///psc6k_leaderboard.sqlite"
    private: bool = False
    max_body_bytes: int = 200 * MB
    max_decompressed_bytes: int = 1024 * MB
    max_flow_side: int = 256
    max_concurrent_scoring: int = 2
    max_pending_scoring: int = 32
    upload_timeout_s: float = 300.0
    upload_idle_timeout_s: float = 30.0
    max_uploads_per_client: int = 4
    max_uploads: int = 256
    daily_quota: int = 5
    admin_token: str | None = None
    model_scores: str | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    split_name: str = "test"
    seed_published: bool = True
    extra: dict = field(default_factory=dict)

    def wants_seed(self) -> bool:
        """Seed the paper's numbers? They were measured on the public test split, so never on a
        private (hidden) one."""
        return self.seed_published and not self.private

    def resolved_admin_token(self) -> str | None:
        return self.admin_token or os.environ.get(ENV_ADMIN_TOKEN) or None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerSettings":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_env(cls) -> "ServerSettings":
        text = os.environ.get(ENV_SETTINGS)
        if not text:
            raise RuntimeError(f"{ENV_SETTINGS} is not set; start the server with 'psc6k serve'")
        return cls.from_json(text)
