"""Bounded planning (annotation_app/service/planning.py): the per-category counts the planner
reads stay equal to a recount from the slots through any sequence of reservations, clicks,
releases, first-click expiries and flagging, and the planner, which reads only a few rows per
category, makes exactly the plan that a naive planner reading every task makes. Both run on
SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select, text

from annotation_app import db
from annotation_app.config import ItemSpec, StudyConfig
from annotation_app.service import StudyService
from annotation_app.service.planning import allocate_categories, pick_tasks, plan_candidates
from annotation_app.study import init_study
from annotation_app.testing import FakeClock, check_invariants, make_study_files
from psc6k import NUM_KEYPOINTS
from psc6k.errors import ConflictError, GoneError

T, SL, CAT, TR = db.tasks, db.slots, db.categories, db.trials
KEY = "test-link-key-1"
CATCH_ANSWER = (50.0, 60.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_study_files(tmp_path_factory.mktemp("planning"), n_categories=4, photos_per_category=3)


def open_study(db_url, files, **cfg):
    catch = ItemSpec(photo=files["photo"][0], sketch=files["sketch"][0], keypoint=2, answer=list(CATCH_ANSWER),
                     tolerance_px=10.0)
    config = StudyConfig(**{"trials_per_participant": 6, "annotators_per_keypoint": 2, "lease_minutes": 10,
                            "first_click_minutes": 2, "catch_per_session": 1, "catch_items": [catch],
                            "link_key": KEY, **cfg})
    init_study(db_url, files["pairs"], files["images"], config, files["keypoints"])
    clock = FakeClock()
    return StudyService(db_url, clock=clock), clock


# ----------------------------------------------------------------------------- the oracles
def recount(conn) -> dict:
    """Per category: (unheld slots, tasks with an unheld slot), counted from the slots rows
    themselves (not from tasks.n_free, which is kept incrementally too)."""
    unheld = dict(conn.execute(select(SL.c.task_id, func.count()).where(SL.c.holder_session_id.is_(None))
                               .group_by(SL.c.task_id)).all())
    per: dict = {}
    for task_id, category in conn.execute(select(T.c.id, T.c.category).where(T.c.is_catch == False)):  # noqa: E712
        free, n_open = per.get(category, (0, 0))
        u = unheld.get(task_id, 0)
        per[category] = (free + u, n_open + (u > 0))
    return per


def stored_counts(conn) -> dict:
    return {c: (f, o) for c, f, o in conn.execute(select(CAT.c.category, CAT.c.n_free, CAT.c.n_open))}


def naive_candidates(conn, config, rng: random.Random) -> dict:
    """The plan as read from every task of the study: free slots and open tasks per category
    summed in Python, each category's tasks sorted by (most free slots, rank), the lowest free
    slot of each picked task."""
    tasks = conn.execute(select(T.c.id, T.c.pair_id, T.c.keypoint, T.c.category, T.c.n_free, T.c.rank)
                         .where(T.c.is_catch == False)).all()  # noqa: E712
    open_tasks = [t for t in tasks if t.n_free > 0]
    free: dict = {}
    n_tasks: dict = {}
    for t in open_tasks:
        free[t.category] = free.get(t.category, 0) + t.n_free
        n_tasks[t.category] = n_tasks.get(t.category, 0) + 1
    free = dict(sorted(free.items()))
    alloc = allocate_categories(free, n_tasks, config.trials_per_participant, rng)
    catch_tasks = sorted(conn.execute(select(T.c.id, T.c.pair_id, T.c.keypoint).where(T.c.is_catch == True)).all())  # noqa: E712
    catch = rng.sample(catch_tasks, min(config.catch_per_session, len(catch_tasks))) if config.catch_per_session else []
    avoid = {(c.pair_id, c.keypoint) for c in catch}
    # every open task of the category, best first (the service reads only a few of them)
    by_category = {c: sorted((t for t in open_tasks if t.category == c), key=lambda t: (-t.n_free, t.rank))
                   for c in free}
    picked = [t for c, need in alloc.items() for t in pick_tasks(by_category[c], need, avoid)]
    slots = []
    for t in picked:
        free_slots = conn.execute(select(SL.c.slot_index, SL.c.id).where(
            SL.c.task_id == t, SL.c.holder_session_id.is_(None)).order_by(SL.c.slot_index)).all()
        slots.append((t, free_slots[0].id, free_slots[0].slot_index))
    return {"alloc": alloc, "catch": [c.id for c in catch], "slots": slots}


def service_candidates(conn, config, rng: random.Random) -> dict:
    cand = plan_candidates(conn, config, rng)
    return {"alloc": cand.alloc, "catch": [c.id for c in cand.catch], "slots": [tuple(s) for s in cand.slots]}


# ----------------------------------------------------------------------------- the tests
def test_counts_and_plans_match_the_naive_oracles_through_random_operations(db_url, files):
    service, clock = open_study(db_url, files)
    rng = random.Random(7)
    sessions: list[str] = []
    per_category = 3 * NUM_KEYPOINTS  # tasks of each category (3 pairs)
    seen = {"start": 0, "full": 0, "click": 0, "flag": 0, "lapse": 0, "closed_task": 0}
    try:
        for step in range(400):
            with service.read.connect() as conn:
                assert stored_counts(conn) == recount(conn), f"step {step}: counts out of step"
                seed = rng.randrange(1 << 30)
                assert service_candidates(conn, service.config, random.Random(seed)) == \
                    naive_candidates(conn, service.config, random.Random(seed)), f"step {step}: plans differ"
                seen["closed_task"] |= any(o < per_category for _, o in stored_counts(conn).values())
            op = rng.choices(["start", "click", "advance"], weights=[4, 6, 1])[0]
            if op == "start":
                try:
                    body, created = service.sessions.start(f"PID{step:04d}", "S", "X", KEY)
                except ConflictError as exc:
                    assert exc.fields["reason"] == "study_full"
                    seen["full"] += 1
                    continue
                assert created
                sessions.append(body["session_token"])
                seen["start"] += 1
            elif op == "click" and sessions:
                token = rng.choice(sessions[-4:])  # the latest ones: mostly still active
                body = service.sessions.body(token)
                todo = [t for t in body["trials"] if not t["answered"]]
                if body["status"] != "active" or not todo:
                    continue
                trial = rng.choice(todo)
                with service.read.connect() as conn:
                    is_catch = conn.execute(select(TR.c.is_catch).where(TR.c.id == trial["trial_id"])).scalar_one()
                x, y = (200.0, 200.0) if is_catch and rng.random() < 0.5 else CATCH_ANSWER
                try:
                    service.clicks.record(token, trial["trial_id"], x, y, 1000.0, f"c{step}", None)
                except GoneError:
                    continue
                seen["click"] += 1
                seen["flag"] += is_catch and x == 200.0
            else:
                clock.t += rng.choice([10, 30, 60, 150, 700])
                seen["lapse"] += service.leases.release_lapsed()
        check_invariants(service)
    finally:
        service.close()
    # the sequence went through every kind of change of the counts
    assert all(seen[k] for k in ("start", "full", "click", "flag", "lapse", "closed_task")), seen


def test_plan_takes_the_best_task_of_each_category(db_url, files):
    """Hand-worked: 4 categories x 3 pairs x 8 keypoints, 2 slots each, 6 trials. The first
    session gets one trial per category plus one more in two of them; in a category it takes
    the lowest-rank task, and its second trial is the lowest-rank task of another pair. The
    second session takes none of those (they have 1 free slot, the others 2): again the
    lowest-rank tasks, now among the tasks with 2 free slots."""
    service, _ = open_study(db_url, files, catch_per_session=0, catch_items=[])
    try:
        with service.read.connect() as conn:
            tasks = conn.execute(select(T.c.id, T.c.pair_id, T.c.category, T.c.rank)
                                 .where(T.c.is_catch == False)).all()  # noqa: E712

        def expected(exclude: set, cats_with_two: set) -> set:
            want = set()
            for c in {t.category for t in tasks}:
                ranked = sorted((t for t in tasks if t.category == c and t.id not in exclude), key=lambda t: t.rank)
                want.add(ranked[0].id)
                if c in cats_with_two:
                    want.add(next(t.id for t in ranked if t.pair_id != ranked[0].pair_id))
            return want

        planned = []
        for pid in ("PIDfirst", "PIDsecond"):
            body, _ = service.sessions.start(pid, "S", "X", KEY)
            cats = [t["category"] for t in body["trials"]]
            assert len(cats) == 6 and len(set(cats)) == 4
            with service.read.connect() as conn:
                planned.append(set(conn.execute(select(TR.c.task_id).join(db.sessions).where(
                    db.sessions.c.prolific_pid == pid)).scalars().all()))
            two = {c for c in cats if cats.count(c) == 2}
            assert len(two) == 2
            assert planned[-1] == expected(planned[0] if pid == "PIDsecond" else set(), two)
        assert not planned[0] & planned[1]
    finally:
        service.close()


def test_a_study_made_before_the_counts_gets_them_on_open(db_url, files):
    service, _ = open_study(db_url, files)
    for i in range(5):
        service.sessions.start(f"PIDold{i}", "S", "X", KEY)
    with service.read.connect() as conn:
        expected = recount(conn)
    service.close()
    with service.write.begin() as conn:  # what an earlier version's database looks like
        conn.execute(text("DROP TABLE categories"))
    service = StudyService(db_url)
    try:
        with service.read.connect() as conn:
            assert stored_counts(conn) == expected
        body, created = service.sessions.start("PIDnew", "S", "X", KEY)
        assert created and body["total"] == 7
        with service.read.connect() as conn:
            assert stored_counts(conn) == recount(conn)
    finally:
        service.close()
