"""Leaderboard storage (SQLAlchemy 2): tokens, leaderboard entries and scoring records.

SQLite is the default (one process; WAL, every transaction ``BEGIN IMMEDIATE`` so that the
quota check-and-insert is atomic even across processes); PostgreSQL is the choice for several
uvicorn workers (the token row is locked ``FOR UPDATE`` while its quota is checked).
All times are naive UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import threading
import uuid

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, create_engine,
                        event, func, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

TOKEN_PREFIX = "psc6k_"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def utc_day_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def hash_token(token: str) -> str:
    """SHA-256 hex of a token. Tokens are 256-bit random strings, so a fast hash is enough
    (nothing to brute-force); only hashes are stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "psc6k_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    daily_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Entry(Base):
    """One leaderboard row: a scored submission or a number reported in the paper."""

    __tablename__ = "psc6k_entries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("psc6k_tokens.id"), nullable=True, index=True)
    submitter: Mapped[str | None] = mapped_column(String(200), nullable=True)
    method: Mapped[str] = mapped_column(String(200))
    paper_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    encoder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    supervision: Mapped[str | None] = mapped_column(String(20), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(20), default="submitted")  # "submitted" | "paper"
    split: Mapped[str] = mapped_column(String(50), default="test")
    annotations_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scorer_version: Mapped[str] = mapped_column(String(50))
    n_pairs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pck05: Mapped[float | None] = mapped_column(Float, nullable=True)
    pck10: Mapped[float | None] = mapped_column(Float, nullable=True)
    ranked: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    scores: Mapped[dict] = mapped_column(JSON, default=dict)
    seed_key: Mapped[str | None] = mapped_column(String(100), unique=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Scoring(Base):
    """One successful ``POST /score`` (kept for audit; counted against the quota in private mode)."""

    __tablename__ = "psc6k_scorings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("psc6k_tokens.id"), nullable=True, index=True)
    kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    n_pairs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pck05: Mapped[float | None] = mapped_column(Float, nullable=True)
    pck10: Mapped[float | None] = mapped_column(Float, nullable=True)
    scorer_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    body_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


def finite_or_none(value) -> float | None:
    """A score as float, or None when it is missing, not a number, or not finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite recipe)
            cur = dbapi_conn.cursor()
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per commit, still consistent
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


_init_lock = threading.Lock()


def init_db(engine: Engine, seed_entries: list[dict] | None = None) -> None:
    """Create the tables if needed and insert the seed entries not yet present (idempotent,
    safe when several workers start at once)."""
    with _init_lock:
        try:
            Base.metadata.create_all(engine)
        except IntegrityError:  # pragma: no cover - a concurrent worker created them first
            pass
        for seed in seed_entries or []:
            try:
                with Session(engine) as session, session.begin():
                    row = session.scalar(select(Entry).where(Entry.seed_key == seed["seed_key"]))
                    if row is None:
                        session.add(Entry(**seed))
                    else:  # keep seeds in step with the code (an admin's "hidden" flag stays)
                        for key, value in seed.items():
                            if getattr(row, key) != value:
                                setattr(row, key, value)
            except IntegrityError:  # pragma: no cover - a concurrent worker seeded it first
                pass


# --- tokens -------------------------------------------------------------------------------------

def create_token(engine: Engine, name: str, daily_quota: int | None = None) -> tuple[Token, str]:
    """Create a submitter token; returns the row and the clear token (shown once, stored hashed)."""
    clear = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        token = Token(name=name, token_hash=hash_token(clear), prefix=clear[:12], daily_quota=daily_quota)
        session.add(token)
    return token, clear


def revoke_token(engine: Engine, token_id: int) -> Token | None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        token = session.get(Token, token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = utcnow()
        return token


def list_tokens(engine: Engine) -> list[Token]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(Token).order_by(Token.id)))


def find_token(engine: Engine, clear: str) -> Token | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.scalar(select(Token).where(Token.token_hash == hash_token(clear)))


def _used_today(session: Session, token_id: int, now: dt.datetime) -> int:
    start = utc_day_start(now)
    n_entries = session.scalar(select(func.count()).select_from(Entry).where(
        Entry.token_id == token_id, Entry.created_at >= start)) or 0
    n_scorings = session.scalar(select(func.count()).select_from(Scoring).where(
        Scoring.token_id == token_id, Scoring.created_at >= start)) or 0
    return int(n_entries) + int(n_scorings)


def quota_left(engine: Engine, token: Token, default_quota: int) -> int:
    quota = token.daily_quota if token.daily_quota is not None else default_quota
    with Session(engine) as session:
        return max(0, quota - _used_today(session, token.id, utcnow()))


class QuotaExceeded(Exception):
    pass


class TokenRevoked(Exception):
    pass


def record_counted(engine: Engine, token_id: int, default_quota: int, row: Entry | Scoring) -> Entry | Scoring:
    """Insert ``row`` (owned by ``token_id``) if the token has quota left today, atomically.

    Raises :class:`QuotaExceeded` or :class:`TokenRevoked`. Only scored submissions reach this
    point, so validation failures never use quota.
    """
    with Session(engine, expire_on_commit=False) as session, session.begin():
        token = session.scalar(select(Token).where(Token.id == token_id).with_for_update())
        if token is None or token.revoked_at is not None:
            raise TokenRevoked()
        quota = token.daily_quota if token.daily_quota is not None else default_quota
        if _used_today(session, token_id, utcnow()) >= quota:
            raise QuotaExceeded(quota)
        row.token_id = token_id
        session.add(row)
    return row


def record(engine: Engine, row: Entry | Scoring) -> Entry | Scoring:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return row


# --- leaderboard --------------------------------------------------------------------------------

def list_entries(engine: Engine, include_hidden: bool = False) -> list[Entry]:
    with Session(engine, expire_on_commit=False) as session:
        query = select(Entry)
        if not include_hidden:
            query = query.where(Entry.hidden.is_(False))
        return list(session.scalars(query.order_by(Entry.created_at, Entry.id)))


def get_entry(engine: Engine, entry_id: str) -> Entry | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Entry, entry_id)


def set_hidden(engine: Engine, entry_id: str, hidden: bool) -> Entry | None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        entry = session.get(Entry, entry_id)
        if entry is not None:
            entry.hidden = hidden
        return entry
