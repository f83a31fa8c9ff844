"""Catch trials: a click farther than the tolerance from the known answer fails; a session
failing more than ``catch_max_failures`` is flagged: its clicks are kept but stop counting and
all its slots go back to the pool."""

from __future__ import annotations

import math

from sqlalchemy import update

from .. import db
from .leases import add_free

S, C, SL = db.sessions, db.clicks, db.slots


def catch_failed(x: float, y: float, answer_x: float, answer_y: float, tolerance_px: float) -> bool:
    """Strictly farther than ``tolerance_px`` (pixels) from the answer."""
    return math.hypot(x - answer_x, y - answer_y) > tolerance_px


def record_catch_result(store, conn, trial, x: float, y: float) -> None:
    """Count a failed catch trial and flag its session past the limit (the caller holds the
    plan lock). ``trial``: the session's ``id``, ``catch_failed``, ``flagged`` and the task's
    ``answer_x``, ``answer_y``, ``tolerance_px``."""
    if not catch_failed(x, y, trial.answer_x, trial.answer_y, trial.tolerance_px):
        return
    n_failed = trial.catch_failed + 1
    conn.execute(update(S).where(S.c.id == trial.id).values(catch_failed=n_failed))
    if n_failed > store.config.catch_max_failures and not trial.flagged:
        flag_session(store, conn, trial.id)


def flag_session(store, conn, session_id: int) -> None:
    """Its clicks stop counting (kept, marked ``excluded``) and all its slots, filled or not,
    go back to the pool."""
    conn.execute(update(S).where(S.c.id == session_id).values(flagged=True))
    conn.execute(update(C).where(C.c.session_id == session_id).values(slot_index=None, excluded=True))
    task_ids = conn.execute(update(SL).where(SL.c.holder_session_id == session_id)
                            .values(holder_session_id=None, filled=False).returning(SL.c.task_id)).scalars().all()
    add_free(conn, task_ids, +1)
    store.bump_plan_version(conn)
