"""Planning: which trials a new session gets, and claiming their slots.

Categories are dealt round-robin, fullest first, so each participant gets one pair per category
when trials_per_participant <= categories; inside a category the task with the most free slots
wins (ties: a random rank fixed at init), so every keypoint gets its first click before any gets
its second: slots fill evenly and the study ends with the minimum number of sessions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, select, update

from psc6k import NUM_KEYPOINTS

from .. import db
from .leases import add_free

T, SL = db.tasks, db.slots


@dataclass
class Candidates:
    """What a new plan would take, read without the plan lock.

    ``alloc``: trials wanted per category; ``catch``: the catch tasks drawn; ``avoid``: their
    (pair, keypoint)s; ``by_category``: per category the best candidate tasks in order.
    """

    alloc: dict = field(default_factory=dict)
    catch: list = field(default_factory=list)
    avoid: set = field(default_factory=set)
    by_category: dict = field(default_factory=dict)


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
    free = conn.execute(select(T.c.category, func.sum(T.c.n_free), func.count())
                        .where(T.c.is_catch == False, T.c.n_free > 0).group_by(T.c.category)).all()  # noqa: E712
    alloc = allocate_categories({c: int(f) for c, f, _ in free}, {c: int(n) for c, _, n in free},
                                config.trials_per_participant, rng)
    # catch trials first, so regular picks can avoid their (pair, keypoint)
    catch = []
    if config.catch_per_session:
        catch_tasks = conn.execute(select(T.c.id, T.c.pair_id, T.c.keypoint).where(T.c.is_catch == True)).all()  # noqa: E712
        catch = rng.sample(list(catch_tasks), min(config.catch_per_session, len(catch_tasks)))
    avoid = {(c.pair_id, c.keypoint) for c in catch}
    by_category: dict[str, list] = {}
    if alloc:
        # One query for all categories: the best few tasks of each (most free slots, then rank).
        k = max(alloc.values()) * NUM_KEYPOINTS + len(avoid) + 1
        ranked = select(T.c.id, T.c.pair_id, T.c.keypoint, T.c.category, func.row_number().over(
            partition_by=T.c.category, order_by=(T.c.n_free.desc(), T.c.rank)).label("rn")).where(
            T.c.is_catch == False, T.c.n_free > 0).subquery()  # noqa: E712
        rows = conn.execute(select(ranked.c.id, ranked.c.pair_id, ranked.c.keypoint, ranked.c.category)
                            .where(ranked.c.rn <= k).order_by(ranked.c.category, ranked.c.rn)).all()
        for r in rows:
            by_category.setdefault(r.category, []).append(r)
    return Candidates(alloc, catch, avoid, by_category)


def pick_tasks(rows, need: int, avoid: set) -> list[int]:
    """``need`` task ids from ``rows`` (best first): distinct pairs first, then anything left,
    never a catch trial's (pair, keypoint)."""
    used_pairs: set[int] = set()
    picked: list[int] = []
    for prefer_new_pair in (True, False):
        for r in rows:
            if len(picked) == need:
                break
            if r.id in picked or (r.pair_id, r.keypoint) in avoid:
                continue
            if prefer_new_pair and r.pair_id in used_pairs:
                continue
            picked.append(r.id)
            used_pairs.add(r.pair_id)
    return picked


def claim(store, conn, session_id: int, cand: Candidates, rng: random.Random) -> list[dict]:
    """Take the slots of a plan (the caller holds the plan lock and checked the plan is
    current); returns the shuffled plan ``[{task_id, slot_index, is_catch}]``."""
    task_ids = [t for cat, need in cand.alloc.items() for t in pick_tasks(cand.by_category.get(cat, []), need, cand.avoid)]
    if not task_ids:
        return []
    slot_of = dict(conn.execute(select(SL.c.task_id, func.min(SL.c.slot_index)).where(
        SL.c.task_id.in_(task_ids), SL.c.holder_session_id.is_(None)).group_by(SL.c.task_id)).all())
    task_ids = [t for t in task_ids if t in slot_of]
    if not task_ids:
        return []
    res = conn.execute(update(SL).where(SL.c.task_id == bindparam("tid"), SL.c.slot_index == bindparam("sidx"),
                                        SL.c.holder_session_id.is_(None)).values(holder_session_id=session_id),
                       [{"tid": t, "sidx": slot_of[t]} for t in task_ids])
    if res.rowcount not in (-1, len(task_ids)):
        raise RuntimeError("slot assignment raced although the plan lock was held")
    add_free(conn, task_ids, -1)
    store.bump_plan_version(conn)
    plan = [{"task_id": t, "slot_index": slot_of[t], "is_catch": False} for t in task_ids]
    plan += [{"task_id": c.id, "slot_index": None, "is_catch": True} for c in cand.catch]
    rng.shuffle(plan)
    return plan
