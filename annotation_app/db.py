"""Database schema and engines of the annotation service (SQLAlchemy 2 Core).

SQLite (the embedded default; WAL, foreign keys on, busy timeout, ``synchronous=FULL`` so a
committed click survives a crash) or PostgreSQL (psycopg 3) by URL.

The study's invariants are database constraints, not only Python checks:

* ``slots``: exactly ``annotators_per_keypoint`` rows per task, ``UNIQUE(task_id, slot_index)``,
  and ``UNIQUE(task_id, holder_session_id)`` (one participant holds at most one slot of a task).
* ``clicks``: ``UNIQUE(task_id, slot_index)`` (one click per slot); ``FOREIGN KEY (task_id,
  slot_index) -> slots`` (so at most ``annotators_per_keypoint`` counted clicks per task);
  ``UNIQUE(task_id, session_id)`` (one click per participant per (pair, keypoint)); together:
  the counted clicks of a keypoint come from distinct participants. ``UNIQUE(trial_id)`` (one
  click per trial) and ``UNIQUE(session_id, client_id)`` (idempotent retries).
* ``sessions``: ``UNIQUE(prolific_pid)`` (one plan per participant, ever), ``UNIQUE(token)``.
* ``trials``: ``UNIQUE(session_id, idx)``, ``UNIQUE(session_id, task_id)`` (never the same
  (pair, keypoint) twice in one plan).

A click of a catch trial, or of a session flagged for failing catch trials, has
``slot_index = NULL``: it is kept as a record but fills no slot.

Concurrency: plan building and slot release run under one lock (``BEGIN IMMEDIATE`` on SQLite,
``SELECT ... FOR UPDATE`` of the study row on PostgreSQL); clicks take row locks only, and every
click transaction re-checks that its slot is still held by its session (``UPDATE ... WHERE
holder_session_id = :me AND NOT filled``), so a lapsed lease can never lose or double a slot.
"""

from __future__ import annotations

import time

from sqlalchemy import (Boolean, CheckConstraint, Column, Float, ForeignKey, ForeignKeyConstraint,
                        Index, Integer, MetaData, String, Table, Text, UniqueConstraint, case,
                        create_engine, event, func, insert, inspect, select)
from sqlalchemy.engine import Engine, make_url

metadata = MetaData()

study = Table(
    "study", metadata,
    Column("id", Integer, primary_key=True),
    Column("config_json", Text, nullable=False),      # the resolved study config (see config.py)
    Column("salt", String(64), nullable=False),       # pseudonym salt; never exported
    Column("image_root", Text, nullable=False),       # absolute path of the Sketchy root
    Column("created_at", Float, nullable=False),
    # bumped under the plan lock whenever slots are claimed or released: a plan computed outside
    # the lock is used only if the version did not move meanwhile (see StudyService.start_session)
    Column("plan_version", Integer, nullable=False, default=0),
    CheckConstraint("id = 1", name="ck_study_single"),
)

pairs = Table(
    "pairs", metadata,
    Column("id", Integer, primary_key=True),
    Column("photo", String(512), nullable=False),
    Column("sketch", String(512), nullable=False),
    Column("category", String(128), nullable=False),
    Column("cls", Integer, nullable=False),
    Column("sketch_kps_json", Text, nullable=False),    # [[x, y]] * 8
    Column("photo_kps_json", Text, nullable=True),      # known answers, when the pairs CSV had them
    UniqueConstraint("photo", "sketch", name="uq_pairs_photo_sketch"),
)

tasks = Table(
    "tasks", metadata,
    Column("id", Integer, primary_key=True),
    Column("pair_id", Integer, ForeignKey("pairs.id"), nullable=False),
    Column("keypoint", Integer, nullable=False),
    Column("is_catch", Boolean, nullable=False, default=False),
    Column("category", String(128), nullable=False),    # denormalised for assignment queries
    Column("n_free", Integer, nullable=False),          # slots with no holder (kept by the app)
    Column("rank", Integer, nullable=False),            # random tie-break fixed at init
    Column("answer_x", Float, nullable=True),           # catch trials only
    Column("answer_y", Float, nullable=True),
    Column("tolerance_px", Float, nullable=True),
    UniqueConstraint("pair_id", "keypoint", "is_catch", name="uq_tasks_pair_keypoint"),
    CheckConstraint("keypoint >= 0 AND keypoint < 8", name="ck_tasks_keypoint"),
    CheckConstraint("n_free >= 0", name="ck_tasks_n_free"),
)
# a category's best tasks (most free slots, then rank) are the first rows of this index: planning
# reads a few rows per category instead of sorting every task of the study
Index("ix_tasks_pick", tasks.c.is_catch, tasks.c.category, tasks.c.n_free.desc(), tasks.c.rank)

categories = Table(
    "categories", metadata,
    # per category of the regular tasks, kept in step with tasks.n_free (service.leases.add_free,
    # in the transaction that moves the slots), so that planning reads one row per category
    Column("category", String(128), primary_key=True),
    Column("n_free", Integer, nullable=False),          # sum of tasks.n_free
    Column("n_open", Integer, nullable=False),          # tasks with n_free > 0
    CheckConstraint("n_free >= 0", name="ck_categories_n_free"),
    CheckConstraint("n_open >= 0 AND n_open <= n_free", name="ck_categories_n_open"),
)

sessions = Table(
    "sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("prolific_pid", String(128), nullable=False, unique=True),
    Column("participant", String(64), nullable=False, unique=True),  # salted pseudonym
    Column("prolific_study_id", String(128), nullable=False),
    Column("prolific_session_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),     # active | completed | expired
    Column("flagged", Boolean, nullable=False, default=False),
    Column("catch_failed", Integer, nullable=False, default=0),
    Column("n_trials", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("completed_at", Float, nullable=True),
    # when the first trial (not practice) was served: the first-click window starts there
    Column("first_served_at", Float, nullable=True),
    CheckConstraint("status IN ('active', 'completed', 'expired')", name="ck_sessions_status"),
)
Index("ix_sessions_lease", sessions.c.status, sessions.c.expires_at)

slots = Table(
    "slots", metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("slot_index", Integer, nullable=False),
    Column("holder_session_id", Integer, ForeignKey("sessions.id"), nullable=True),
    Column("filled", Boolean, nullable=False, default=False),
    UniqueConstraint("task_id", "slot_index", name="uq_slots_task_slot"),
    UniqueConstraint("task_id", "holder_session_id", name="uq_slots_task_holder"),
    CheckConstraint("slot_index >= 0", name="ck_slots_index"),
    CheckConstraint("NOT filled OR holder_session_id IS NOT NULL", name="ck_slots_filled_held"),
)
Index("ix_slots_holder", slots.c.holder_session_id)

trials = Table(
    "trials", metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("sessions.id"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("slot_index", Integer, nullable=True),      # NULL for catch trials
    Column("is_catch", Boolean, nullable=False, default=False),
    # when the server first handed out this trial's images: a click's server-side response time
    # is its created_at minus this (never the client's rt_ms)
    Column("served_at", Float, nullable=True),
    UniqueConstraint("session_id", "idx", name="uq_trials_session_idx"),
    UniqueConstraint("session_id", "task_id", name="uq_trials_session_task"),
)

clicks = Table(
    "clicks", metadata,
    Column("id", Integer, primary_key=True),
    Column("trial_id", Integer, ForeignKey("trials.id"), nullable=False, unique=True),
    Column("session_id", Integer, ForeignKey("sessions.id"), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("slot_index", Integer, nullable=True),      # NULL: catch trial or flagged session
    Column("client_id", String(128), nullable=False),
    Column("x", Float, nullable=False),
    Column("y", Float, nullable=False),
    Column("rt_ms", Float, nullable=True),
    Column("display_json", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("excluded", Boolean, nullable=False, default=False),
    Column("reply_json", Text, nullable=False),        # the exact 2xx body, for idempotent retries
    UniqueConstraint("task_id", "slot_index", name="uq_clicks_slot"),
    UniqueConstraint("task_id", "session_id", name="uq_clicks_task_participant"),
    UniqueConstraint("session_id", "client_id", name="uq_clicks_client_id"),
    ForeignKeyConstraint(["task_id", "slot_index"], ["slots.task_id", "slots.slot_index"],
                         name="fk_clicks_slot"),
)
Index("ix_clicks_session", clicks.c.session_id)

resume_refusals = Table(
    "resume_refusals", metadata,
    # the same PROLIFIC_PID came back with another STUDY_ID / SESSION_ID: refused, recorded here
    # for the researcher (dashboard, /api/admin/progress and /api/admin/participants)
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("sessions.id"), nullable=False),
    Column("prolific_study_id", String(128), nullable=False),
    Column("prolific_session_id", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_resume_refusals_session", resume_refusals.c.session_id)
Index("ix_clicks_created", clicks.c.created_at)


def is_sqlite(engine_or_url) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(str(engine_or_url))
    return url.get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3, and a bare file path as SQLite."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


#: SQLite durability: FULL fsyncs the WAL at every commit (a click survives a power loss);
#: NORMAL survives any crash of the server process (kill -9 included) but not of the machine,
#: and is an order of magnitude faster on slow disks (``AnnotationSettings.sqlite_synchronous``).
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


def make_engines(url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> tuple[Engine, Engine]:
    """Return ``(write_engine, read_engine)`` for ``url``.

    On SQLite the write engine opens every transaction with ``BEGIN IMMEDIATE`` (so writers
    queue on the busy timeout instead of failing on lock upgrade) and the read engine with a
    plain deferred ``BEGIN`` (WAL readers never block). On PostgreSQL both are the same engine.
    """
    url = normalise_url(url)
    sync = sqlite_synchronous.upper()
    if sync not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"SQLite synchronous mode must be one of {SQLITE_SYNCHRONOUS}, got {sync!r}")
    if not is_sqlite(url):
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        return engine, engine
    if make_url(url).database in (None, "", ":memory:"):
        raise ValueError("use a file for SQLite (sqlite:///path/study.db), not an in-memory database")

    def sqlite_engine(begin_sql: str) -> Engine:
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=pool_size)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql(begin_sql)

        return engine

    return sqlite_engine("BEGIN IMMEDIATE"), sqlite_engine("BEGIN")


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


def add_category_counts(conn) -> bool:
    """Give a study made before the ``categories`` table existed its counts (the caller holds
    the plan lock); returns whether it had to. Idempotent."""
    if inspect(conn).has_table("categories"):
        return False
    categories.create(conn)
    conn.execute(insert(categories).from_select(["category", "n_free", "n_open"], category_counts_query()))
    return True


#: Columns added after the first studies were made: a study made before gets them (NULL) when
#: the server opens it (:func:`upgrade`).
ADDED_COLUMNS = ((sessions, "first_served_at"), (trials, "served_at"))
#: Tables added since: created when the server opens an older study.
ADDED_TABLES = (resume_refusals,)


def needs_upgrade(conn) -> bool:
    """Whether the study in ``conn`` lacks a table or column of this version."""
    insp = inspect(conn)
    if not insp.has_table("categories") or any(not insp.has_table(t.name) for t in ADDED_TABLES):
        return True
    return any(name not in {c["name"] for c in insp.get_columns(table.name)} for table, name in ADDED_COLUMNS)


def upgrade(conn) -> list[str]:
    """Bring a study made by an earlier version to this schema (the caller holds the plan lock):
    the ``categories`` counts, then the added tables and nullable columns. Idempotent; returns
    what it added."""
    done = ["categories"] if add_category_counts(conn) else []
    insp = inspect(conn)
    for table in ADDED_TABLES:
        if not insp.has_table(table.name):
            table.create(conn)
            done.append(table.name)
    for table, name in ADDED_COLUMNS:
        if name not in {c["name"] for c in insp.get_columns(table.name)}:
            ddl = table.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {ddl}")
            done.append(f"{table.name}.{name}")
    return done


def category_counts_query():
    """Per category of the regular tasks: ``(category, n_free, n_open)`` recounted from the
    tasks (what the ``categories`` table holds; used to fill it and by the tests as its oracle)."""
    return (select(tasks.c.category, func.sum(tasks.c.n_free), func.sum(case((tasks.c.n_free > 0, 1), else_=0)))
            .where(tasks.c.is_catch == False).group_by(tasks.c.category))  # noqa: E712


def drop_schema(engine: Engine) -> None:
    metadata.drop_all(engine)


def now() -> float:
    """Seconds since the epoch (UTC); every timestamp in the database is one of these."""
    return time.time()
