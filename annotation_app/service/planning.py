"""Planning: which trials a new session gets, and claiming their slots.

Categories are dealt round-robin, fullest first, so each participant gets one pair per category
when trials_per_participant <= categories; inside a category the task with the most free slots
wins (ties: a random rank fixed at init), so every keypoint gets its first click before any gets
its second: slots fill evenly and the study ends with the minimum number of sessions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, true, update

from psc6k import NUM_KEYPOINTS

from .. import db
from .leases import add_free

T, SL, CAT = db.tasks, db.slots, db.categories

# The statements, built once. Planning reads O(categories x trials per category) rows: one row
# per category with free slots (the ``categories`` counts) and the first few rows of each
# category in ``ix_tasks_pick``, never every task of the study.
_Q_OPEN_CATEGORIES = select(CAT.c.category, CAT.c.n_free, CAT.c.n_open).where(CAT.c.n_free > 0)
_Q_CATCH = select(T.c.id, T.c.pair_id, T.c.keypoint).where(T.c.is_catch == True).order_by(T.c.id)  # noqa: E712


def _best_tasks_query(lateral: bool):
    """The best ``k`` open tasks of every category with free slots (most free slots first, ties
    by rank), ordered by category, then best first.

    PostgreSQL runs it as a LATERAL join; SQLite (no LATERAL) as a correlated ``id IN (...
    LIMIT k)``, which it evaluates once per category as a search of the index.
    """
    t = T.alias("best")
    best = (select(t.c.id, t.c.pair_id, t.c.keypoint, t.c.category, t.c.n_free, t.c.rank)
            .where(t.c.is_catch == False, t.c.category == CAT.c.category, t.c.n_free > 0)  # noqa: E712
            .order_by(t.c.n_free.desc(), t.c.rank).limit(bindparam("k")))
    if lateral:
        best = best.lateral("best_of_category")
        src = CAT.join(best, true())
    else:
        best = best.with_only_columns(t.c.id).correlate(CAT)
        best_rows = T.alias("best_row")
        src, best = CAT.join(best_rows, best_rows.c.id.in_(best)), best_rows
    return (select(best.c.id, best.c.pair_id, best.c.keypoint, best.c.category).select_from(src)
            .where(CAT.c.n_free > 0).order_by(best.c.category, best.c.n_free.desc(), best.c.rank))


_Q_BEST = {False: _best_tasks_query(lateral=False), True: _best_tasks_query(lateral=True)}
_Q_FREE_SLOTS = (select(SL.c.task_id, SL.c.slot_index, SL.c.id)
                 .where(SL.c.task_id.in_(bindparam("tids", expanding=True)), SL.c.holder_session_id.is_(None)))
_U_HOLD = (update(SL).where(SL.c.id.in_(bindparam("ids", expanding=True)), SL.c.holder_session_id.is_(None))
           .values(holder_session_id=bindparam("sid")))


@dataclass
class Candidates:
    """A new plan, read without the plan lock (:func:`claim` takes its slots under it, after
    checking that no slot moved since).

    ``alloc``: trials wanted per category; ``catch``: the catch tasks drawn; ``avoid``: their
    (pair, keypoint)s; ``by_category``: per category the best candidate tasks in order;
    ``slots``: the regular trials, ``(task_id, slot_id, slot_index)`` of the free slot each takes.
    """

    alloc: dict = field(default_factory=dict)
    catch: list = field(default_factory=list)
    avoid: set = field(default_factory=set)
    by_category: dict = field(default_factory=dict)
    slots: list = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        return len(self.slots) + len(self.catch)


def allocate_categories(free: dict[str, int], n_tasks: dict[str, int], want: int, rng: random.Random) -> dict:
    """Trials per category: round-robin over categories with free slots, fullest first (ties at
    random), never more trials of a category than it has tasks."""
    remaining = dict(free)
    alloc: dict[str, int] = {}
    total = 0
    while total < want:
        open_cats = [c for c in remaining if remaining[c] > 0 and alloc.get(c, 0) < n_tasks[c]]
        if not open_cats:
            break
        order = sorted(open_cats, key=lambda c: (-remaining[c], rng.random()))
        for c in order[: want - total]:
            alloc[c] = alloc.get(c, 0) + 1
            remaining[c] -= 1
            total += 1
    return alloc


def plan_candidates(conn, config, rng: random.Random) -> Candidates:
    """Read what a new plan would take (no lock needed; :func:`claim` takes the slots)."""
    # sorted: the same counts give the same allocation for the same rng, whatever the row order
    free = sorted(conn.execute(_Q_OPEN_CATEGORIES).all())
    alloc = allocate_categories({c: int(f) for c, f, _ in free}, {c: int(n) for c, _, n in free},
                                config.trials_per_participant, rng)
    # catch trials first, so regular picks can avoid their (pair, keypoint)
    catch = []
    if config.catch_per_session:
        catch_tasks = conn.execute(_Q_CATCH).all()
        catch = rng.sample(list(catch_tasks), min(config.catch_per_session, len(catch_tasks)))
    avoid = {(c.pair_id, c.keypoint) for c in catch}
    by_category: dict[str, list] = {}
    if alloc:
        # First the fewest rows that can do: ``need`` per category plus the catch trials'. That
        # prefix gives the same picks as the whole category whenever its first pass (distinct
        # pairs) fills up in it, or it is the whole category; otherwise read enough for distinct
        # pairs after the catch trials' (a pair has NUM_KEYPOINTS tasks). Planning runs inside
        # the SQLite writer lock, so the ten times fewer rows of the usual case matter.
        k = max(alloc.values()) + len(avoid)
        by_category = _best_tasks(conn, k)
        if any(len(rows) == k and len(_distinct_pairs(rows, alloc[cat], avoid)) < alloc[cat]
               for cat, rows in by_category.items() if cat in alloc):
            by_category = _best_tasks(conn, max(alloc.values()) * NUM_KEYPOINTS + len(avoid) + 1)
    task_ids = [t for cat, need in alloc.items() for t in pick_tasks(by_category.get(cat, []), need, avoid)]
    lowest: dict[int, tuple[int, int]] = {}  # task -> (slot_index, slot_id) of its lowest free slot
    if task_ids:
        for task_id, slot_index, slot_id in conn.execute(_Q_FREE_SLOTS, {"tids": task_ids}).all():
            if task_id not in lowest or slot_index < lowest[task_id][0]:
                lowest[task_id] = (slot_index, slot_id)
    slots = [(t, lowest[t][1], lowest[t][0]) for t in task_ids if t in lowest]
    return Candidates(alloc, catch, avoid, by_category, slots)


def _best_tasks(conn, k: int) -> dict[str, list]:
    """The best ``k`` open tasks of every category with free slots, best first, by category."""
    by_category: dict[str, list] = {}
    for r in conn.execute(_Q_BEST[conn.dialect.name == "postgresql"], {"k": k}).all():
        by_category.setdefault(r.category, []).append(r)
    return by_category


def _take_tasks(rows, need: int, avoid: set, picked: list[int], distinct_pairs: bool) -> list[int]:
    """Add task ids from ``rows`` (best first) to ``picked`` until it holds ``need``: never a
    catch trial's (pair, keypoint) nor a task twice; with ``distinct_pairs``, never a pair
    already picked."""
    used_pairs = {r.pair_id for r in rows if r.id in picked} if distinct_pairs else set()
    for r in rows:
        if len(picked) == need:
            break
        if r.id in picked or (r.pair_id, r.keypoint) in avoid or r.pair_id in used_pairs:
            continue
        picked.append(r.id)
        if distinct_pairs:
            used_pairs.add(r.pair_id)
    return picked


def _distinct_pairs(rows, need: int, avoid: set) -> list[int]:
    """The first pass of :func:`pick_tasks`: up to ``need`` task ids of distinct pairs."""
    return _take_tasks(rows, need, avoid, [], distinct_pairs=True)


def pick_tasks(rows, need: int, avoid: set) -> list[int]:
    """``need`` task ids from ``rows`` (best first): distinct pairs first, then anything left,
    never a catch trial's (pair, keypoint)."""
    return _take_tasks(rows, need, avoid, _distinct_pairs(rows, need, avoid), distinct_pairs=False)


def claim(store, conn, session_id: int, cand: Candidates, rng: random.Random) -> list[dict]:
    """Take the slots of a plan for ``session_id`` (the caller holds the plan lock and checked
    that the plan is current); returns the shuffled plan ``[{task_id, slot_index, is_catch}]``."""
    if not cand.slots:
        return []
    res = conn.execute(_U_HOLD, {"ids": [slot_id for _, slot_id, _ in cand.slots], "sid": session_id})
    if res.rowcount != len(cand.slots):
        raise RuntimeError("slot assignment raced although the plan lock was held")
    task_ids = [t for t, _, _ in cand.slots]
    add_free(conn, task_ids, -1)
    store.bump_plan_version(conn)
    plan = [{"task_id": t, "slot_index": slot_index, "is_catch": False} for t, _, slot_index in cand.slots]
    plan += [{"task_id": c.id, "slot_index": None, "is_catch": True} for c in cand.catch]
    rng.shuffle(plan)
    return plan
