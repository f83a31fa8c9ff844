"""SQLite group commit (annotation_app/service/group_commit.py): jobs queued together share one
transaction, a failing job rolls back alone, and no job is answered before its commit."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from annotation_app.config import StudyConfig
from annotation_app.service.group_commit import GroupCommit
from annotation_app.service.store import StudyStore
from annotation_app.study import init_study
from annotation_app.testing import make_study_files


@pytest.fixture
def store(tmp_path):
    files = make_study_files(tmp_path, n_categories=2, photos_per_category=1)
    url = f"sqlite:///{tmp_path}/g.db"
    init_study(url, files["pairs"], files["images"], StudyConfig(trials_per_participant=2), files["keypoints"])
    s = StudyStore(url)
    with s.write.begin() as conn:
        conn.execute(text("CREATE TABLE probe (n INTEGER PRIMARY KEY)"))
    yield s
    s.close()


def probe_rows(store):
    with store.read.connect() as conn:
        return sorted(conn.execute(text("SELECT n FROM probe")).scalars())


def test_batched_jobs_commit_together_and_a_failure_rolls_back_alone(store):
    commits = []
    real_tx = store.write_tx

    @contextmanager
    def counting_tx():
        with real_tx() as conn:
            yield conn
        commits.append(1)

    store.write_tx = counting_tx
    group = GroupCommit(store)
    gate, running = threading.Event(), threading.Event()
    group.submit(lambda conn: running.set() or gate.wait(5))  # holds the first transaction open ...
    assert running.wait(5)  # ... while the rest queue up

    def job(n):
        def run(conn):
            conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
            if n == 3:
                raise ValueError("job 3 fails")
            return n
        return run

    futures = [group.submit(job(n)) for n in range(8)]
    gate.set()
    results = []
    for f in futures:
        try:
            results.append(f.result(10))
        except ValueError as exc:
            results.append(str(exc))
    group.close()
    assert results == [0, 1, 2, "job 3 fails", 4, 5, 6, 7]
    assert probe_rows(store) == [0, 1, 2, 4, 5, 6, 7]  # job 3's insert was undone, the others kept
    assert len(commits) == 2  # the gate's transaction, then all 8 queued jobs in one


def test_nothing_is_answered_before_the_commit(store):
    @contextmanager
    def failing_commit():
        with store.write.begin() as conn:
            yield conn
            raise OSError("disk full at commit")  # leaves the block: the transaction rolls back

    store.write_tx = failing_commit
    group = GroupCommit(store)
    future = group.submit(lambda conn: conn.execute(text("INSERT INTO probe (n) VALUES (1)")) and "stored")
    with pytest.raises(OSError, match="disk full"):
        future.result(10)
    group.close()
    assert probe_rows(store) == []


def test_clicks_of_many_threads_all_stored(store):
    from concurrent.futures import ThreadPoolExecutor

    group = GroupCommit(store)

    def insert_slot_free(n):
        return group.run(lambda conn: conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n}).rowcount)

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(insert_slot_free, range(200))) == [1] * 200
    group.close()
    assert probe_rows(store) == list(range(200))


def test_heavy_jobs_get_a_transaction_each_taking_turns_with_the_light_batches(store):
    transactions = []  # the jobs of each committed transaction, in order
    real_tx = store.write_tx

    @contextmanager
    def recording_tx():
        current = []
        with real_tx() as conn:
            conn.info["jobs"] = current
            yield conn
        transactions.append(current)

    store.write_tx = recording_tx
    group = GroupCommit(store)
    gate, running = threading.Event(), threading.Event()
    group.submit(lambda conn: running.set() or gate.wait(5))  # holds the writer while the rest queue
    assert running.wait(5)

    def job(name):
        def run(conn):
            conn.info["jobs"].append(name)
            conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": len(probe_names)})
            probe_names.append(name)
            return name
        return run

    probe_names = []
    queued = [("claim1", True), ("click1", False), ("claim2", True), ("click2", False), ("claim3", True),
              ("click3", False)]
    futures = [group.submit(job(name), heavy=heavy) for name, heavy in queued]
    gate.set()
    assert [f.result(10) for f in futures] == [name for name, _ in queued]
    group.close()
    # after the gate's (light) batch a claim's turn, then all three clicks in one batch, then
    # the other claims one by one (no light job left to take turns with)
    assert transactions[1:] == [["claim1"], ["click1", "click2", "click3"], ["claim2"], ["claim3"]]
    assert probe_rows(store) == list(range(6))


def test_a_click_waits_behind_at_most_one_heavy_job(store):
    """Claims queued while clicks keep coming: a click that arrives during a claim runs right
    after it, before the next claim (an event makes each claim wait for the next click)."""
    order = []
    group = GroupCommit(store)
    gate, running = threading.Event(), threading.Event()
    group.submit(lambda conn: running.set() or gate.wait(5))
    assert running.wait(5)
    arrived = [threading.Event() for _ in range(3)]

    def claim(i):
        def run(conn):
            order.append(f"claim{i}")
            assert arrived[i].wait(5)  # a click comes in while this claim holds the writer
        return run

    claims = [group.submit(claim(i), heavy=True) for i in range(3)]
    clicks = [group.submit(lambda conn: order.append("click0"))]
    gate.set()
    for i in range(3):
        while f"claim{i}" not in order:
            threading.Event().wait(0.001)
        clicks.append(group.submit(lambda conn, i=i: order.append(f"click{i + 1}")))
        arrived[i].set()
    for f in claims + clicks:
        f.result(10)
    group.close()
    assert order == ["claim0", "click0", "click1", "claim1", "click2", "claim2", "click3"]
