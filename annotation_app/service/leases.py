"""Leases: a session holds its slots until its lease lapses, or, when it made no click at all,
until ``first_click_minutes`` after its first trial was served (or after its start, while no
trial was served: so made-up Prolific ids cannot sit on a study's slots, and a participant who
reads the instructions slowly is not ejected); then its unanswered slots go back to the pool.
Answered clicks always stay."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, func, or_, select, update

from .. import db

T, S, C, SL, CAT = db.tasks, db.sessions, db.clicks, db.slots, db.categories


_U_TASK_FREE = (update(T).where(T.c.id.in_(bindparam("ids", expanding=True)))
                .values(n_free=T.c.n_free + bindparam("delta")).returning(T.c.category, T.c.n_free))
_U_CATEGORIES = (update(CAT).where(CAT.c.category.in_(bindparam("cats", expanding=True)))
                 .values(n_free=CAT.c.n_free + bindparam("d_free"), n_open=CAT.c.n_open + bindparam("d_open")))


def _group_by_value(counts: dict) -> dict:
    """``{key: value}`` -> ``{value: [keys]}``: one statement per distinct value."""
    groups: dict = {}
    for key, value in counts.items():
        groups.setdefault(value, []).append(key)
    return groups


def add_free(conn, task_ids, delta: int) -> None:
    """Keep ``tasks.n_free`` and the ``categories`` counts in step: ``delta`` free slots per
    occurrence of a task id. One UPDATE per distinct change, of the tasks and then of their
    categories: a plan's 125 tasks in 125 categories are two or three statements, not 250."""
    counts: dict[int, int] = {}
    for t in task_ids:
        counts[t] = counts.get(t, 0) + 1
    per_category: dict[str, tuple[int, int]] = {}  # category -> (free slots added, open tasks added)
    for c, ids in _group_by_value(counts).items():
        d = delta * c
        for category, n_free in conn.execute(_U_TASK_FREE, {"ids": ids, "delta": d}):
            f, o = per_category.get(category, (0, 0))
            per_category[category] = (f + d, o + (n_free > 0) - (n_free - d > 0))  # the task opened / closed
    for (f, o), cats in _group_by_value(per_category).items():
        conn.execute(_U_CATEGORIES, {"cats": cats, "d_free": f, "d_open": o})


def release_unfilled_slots(store, conn, session_ids) -> list[int]:
    """Give the unfilled slots held by ``session_ids`` back; returns their task ids."""
    # RETURNING: exactly the slots released here (a click may fill one concurrently on PostgreSQL)
    task_ids = conn.execute(update(SL).where(SL.c.holder_session_id.in_(session_ids), SL.c.filled == False)  # noqa: E712
                            .values(holder_session_id=None).returning(SL.c.task_id)).scalars().all()
    add_free(conn, task_ids, +1)
    if task_ids:
        store.bump_plan_version(conn)
    return task_ids


def first_click_deadline(created_at: float, first_served_at: float | None, first_click_seconds: float) -> float:
    """When a session without any click gives its slots back (epoch s): ``first_click_seconds``
    after its first trial was served, or after its start while none was."""
    return (created_at if first_served_at is None else first_served_at) + first_click_seconds


def lapsed_sessions(conn, now: float, first_click_seconds: float) -> list[tuple[int, float]]:
    """Active sessions whose lease lapsed, or that made no click within the first-click window
    (:func:`first_click_deadline`), each with the moment its reservation ended."""
    no_click = ~exists().where(C.c.session_id == S.c.id)
    start = func.coalesce(S.c.first_served_at, S.c.created_at)
    rows = conn.execute(select(S.c.id, S.c.expires_at, S.c.created_at, S.c.first_served_at, no_click.label("no_click"))
                        .where(S.c.status == "active",
                               or_(S.c.expires_at < now, (start < now - first_click_seconds) & no_click))).all()
    return [(r.id, min(r.expires_at, first_click_deadline(r.created_at, r.first_served_at, first_click_seconds))
             if r.no_click else r.expires_at) for r in rows]


def release_lapsed(store, conn, now: float) -> int:
    """Expire lapsed sessions and free their slots (the caller holds the plan lock); returns
    how many sessions lapsed. A session ended by the first-click window gets that moment as its
    ``expires_at``, so every message about it names when it really ended."""
    lapsed = lapsed_sessions(conn, now, store.config.first_click_seconds)
    if not lapsed:
        return 0
    ids = [sid for sid, _ in lapsed]
    release_unfilled_slots(store, conn, ids)
    for ended, sids in _group_by_value(dict(lapsed)).items():
        conn.execute(update(S).where(S.c.id.in_(sids)).values(status="expired", expires_at=ended))
    return len(ids)


class Leases:
    """Releasing lapsed reservations, outside any other request."""

    def __init__(self, store):
        self.store = store

    def release_lapsed(self) -> int:
        with self.store.write_tx() as conn:
            self.store.lock_plans(conn)
            return release_lapsed(self.store, conn, self.store.clock())
