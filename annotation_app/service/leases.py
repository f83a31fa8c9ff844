"""Leases: a session holds its slots until its lease lapses, or, when it made no click at all,
until ``first_click_minutes`` after its start (so made-up Prolific ids cannot sit on a study's
slots); then its unanswered slots go back to the pool. Answered clicks always stay."""

from __future__ import annotations

from sqlalchemy import exists, or_, select, update

from .. import db

T, S, C, SL = db.tasks, db.sessions, db.clicks, db.slots


def add_free(conn, task_ids, delta: int) -> None:
    """Keep ``tasks.n_free`` in step: ``delta`` per occurrence of a task id (one UPDATE per
    distinct count: a plan's 125 tasks are one statement, not 125)."""
    counts: dict[int, int] = {}
    for t in task_ids:
        counts[t] = counts.get(t, 0) + 1
    by_count: dict[int, list[int]] = {}
    for t, c in counts.items():
        by_count.setdefault(c, []).append(t)
    for c, ids in by_count.items():
        conn.execute(update(T).where(T.c.id.in_(ids)).values(n_free=T.c.n_free + delta * c))


def release_unfilled_slots(store, conn, session_ids) -> list[int]:
    """Give the unfilled slots held by ``session_ids`` back; returns their task ids."""
    # RETURNING: exactly the slots released here (a click may fill one concurrently on PostgreSQL)
    task_ids = conn.execute(update(SL).where(SL.c.holder_session_id.in_(session_ids), SL.c.filled == False)  # noqa: E712
                            .values(holder_session_id=None).returning(SL.c.task_id)).scalars().all()
    add_free(conn, task_ids, +1)
    if task_ids:
        store.bump_plan_version(conn)
    return task_ids


def lapsed_sessions(conn, now: float, first_click_seconds: float) -> list[int]:
    """Active sessions whose lease lapsed, or that made no click within the first-click window."""
    no_click = ~exists().where(C.c.session_id == S.c.id)
    return conn.execute(select(S.c.id).where(S.c.status == "active", or_(
        S.c.expires_at < now, (S.c.created_at < now - first_click_seconds) & no_click))).scalars().all()


def release_lapsed(store, conn, now: float) -> int:
    """Expire lapsed sessions and free their slots (the caller holds the plan lock); returns
    how many sessions lapsed."""
    ids = lapsed_sessions(conn, now, store.config.first_click_seconds)
    if not ids:
        return 0
    release_unfilled_slots(store, conn, ids)
    conn.execute(update(S).where(S.c.id.in_(ids)).values(status="expired"))
    return len(ids)


class Leases:
    """Releasing lapsed reservations, outside any other request."""

    def __init__(self, store):
        self.store = store

    def release_lapsed(self) -> int:
        with self.store.write_tx() as conn:
            self.store.lock_plans(conn)
            return release_lapsed(self.store, conn, self.store.clock())
