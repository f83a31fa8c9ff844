"""The study's database: engines, the write transaction, and what every part reads often (the
study's config, its pseudonym salt, its images root, the session of a token)."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from psc6k.errors import NotFoundError, Psc6kError

from .. import db
from .group_commit import GroupCommit
from ..config import StudyConfig
from ..study import resolve_image

S = db.sessions
_Q_SESSION = select(S).where(S.c.token == bindparam("token"))


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ``2026-01-31T12:00:00.000Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unknown_token() -> NotFoundError:
    return NotFoundError("unknown session token (start again from the study link)", field="token")


class StudyStore:
    """One study in one database, opened.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL or SQLite file path of a database made by ``psc6k annotate init``.
    image_root : path, optional
        Override the images root stored at init (the Sketchy folder moved).
    clock : callable, optional
        Returns epoch seconds; tests pass a fake one to make leases lapse.
    pool_size : int
        Connections per engine.
    sqlite_synchronous : "FULL" or "NORMAL"
        See :data:`annotation_app.db.SQLITE_SYNCHRONOUS`.

    Raises
    ------
    Psc6kError
        No database there, or no study in it.
    """

    def __init__(self, db_url: str, *, image_root=None, clock=None, pool_size: int = 10,
                 sqlite_synchronous: str = "FULL"):
        self.clock = clock or time.time
        url = db.normalise_url(db_url)
        shown = make_url(url).render_as_string(hide_password=True)
        if db.is_sqlite(url):
            path = make_url(url).database
            if not path or not Path(path).is_file():
                raise Psc6kError(f"no study database at {path} (run psc6k annotate init first)")
        self.write, self.read = db.make_engines(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        self.is_sqlite = db.is_sqlite(self.write)
        try:
            with self.read.connect() as conn:
                row = conn.execute(select(db.study)).first()
        except (OperationalError, ProgrammingError) as exc:
            self._dispose()
            raise Psc6kError(f"{shown} holds no study (run psc6k annotate init first): "
                             f"{str(exc.orig).strip().splitlines()[0]}") from None
        if row is None:
            self._dispose()
            raise Psc6kError(f"{shown} holds no study (run psc6k annotate init first)")
        self._thread_lock = threading.Lock()
        self._lock_fd = self._gate_fd = None
        if self.is_sqlite:
            # One writer at a time across threads and worker processes, queued on a lock file:
            # flock wakes the next writer at once, where SQLite's busy timeout polls with sleeps
            # of up to 100 ms (a p99 killer under load). flock is not fair: a process that just
            # released it can take it straight back, starving the other worker's writer for many
            # commits. The gate is a turnstile: a waiter holds it while it waits for the lock, so
            # the writer that released the lock queues behind that waiter.
            base = str(self.write.url.database)
            self._lock_fd = os.open(base + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)
            self._gate_fd = os.open(base + ".writegate", os.O_RDWR | os.O_CREAT, 0o600)
        # SQLite: clicks of concurrent requests share transactions (one fsync per batch)
        self._group = GroupCommit(self) if self.is_sqlite else None
        with self.read.connect() as conn:
            outdated = db.needs_upgrade(conn)
        if outdated:  # a study made by an earlier version: its added tables, columns and counts, once
            with self.write_tx() as conn:
                self.lock_plans(conn)
                db.upgrade(conn)
        self.config = StudyConfig.from_dict(json.loads(row.config_json))
        self.salt = row.salt
        self.image_root = Path(image_root or row.image_root).resolve()

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def write_tx(self):
        """A write transaction: BEGIN IMMEDIATE on SQLite, behind the writer lock (never call
        this on the event loop: it blocks until the lock is free)."""
        if self._lock_fd is None:
            with self.write.begin() as conn:
                yield conn
            return
        with self._thread_lock:
            fcntl.flock(self._gate_fd, fcntl.LOCK_EX)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self._gate_fd, fcntl.LOCK_UN)
            try:
                with self.write.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def run_write(self, job, heavy: bool = False):
        """``job(conn)`` in a write transaction; returns after the commit. On SQLite the
        transaction is shared with other requests' jobs, except a ``heavy`` job's, which gets
        one of its own between them (:mod:`.group_commit`)."""
        if self._group is not None:
            return self._group.run(job, heavy)
        with self.write_tx() as conn:
            return job(conn)

    def submit_write(self, job):
        """``job(conn)`` queued for a shared transaction, as a ``concurrent.futures.Future``
        (SQLite), or None where writes do not batch (PostgreSQL: use :meth:`run_write`)."""
        return self._group.submit(job) if self._group is not None else None

    def lock_plans(self, conn) -> None:
        """Serialise plan building, slot release and flagging. SQLite: BEGIN IMMEDIATE did it."""
        if not self.is_sqlite:
            conn.execute(select(db.study.c.id).where(db.study.c.id == 1).with_for_update())

    @staticmethod
    def bump_plan_version(conn) -> None:
        """Slots were claimed or released: a plan computed before is stale."""
        conn.execute(update(db.study).where(db.study.c.id == 1).values(plan_version=db.study.c.plan_version + 1))

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            os.close(self._gate_fd)
            self._lock_fd = self._gate_fd = None
        self._dispose()

    def _dispose(self) -> None:
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()

    # ------------------------------------------------------------------ lookups
    def session_by_token(self, conn, token: str):
        sess = conn.execute(_Q_SESSION, {"token": token}).first()
        if sess is None:
            raise unknown_token()
        return sess

    def session_status(self, sess, answered: int) -> str:
        """``active | completed | expired``; a lapsed lease reads as expired before release."""
        if sess.status == "active" and self.clock() > sess.expires_at and answered < sess.n_trials:
            return "expired"
        return sess.status

    def pseudonym(self, prolific_pid: str) -> str:
        """Salted pseudonym of a Prolific id (HMAC-SHA256 with the study's secret salt)."""
        return "P" + hmac.new(self.salt.encode(), prolific_pid.encode(), hashlib.sha256).hexdigest()[:15]

    def image(self, rel: str) -> Path:
        """The file of a registered image path (never outside the images root)."""
        path = resolve_image(self.image_root, rel)
        if not path.is_file():
            raise NotFoundError("image file is missing on the server")
        return path
