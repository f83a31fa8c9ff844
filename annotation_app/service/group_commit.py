"""Group commit for SQLite: many requests' writes share one transaction and one fsync.

With ``synchronous=FULL`` every SQLite commit waits for an fsync of the WAL (2-12 ms on the
project's machine), and writers are serialised, so one commit per click caps a study at a few
hundred clicks per second with long queues behind each fsync. Here one writer thread per
process takes every write job queued while the previous commit was on disk, runs each in its
own SAVEPOINT (a job that fails rolls back alone), commits once, and only *then* hands each job
its result: no request is answered before the commit that made its write durable, so an
acknowledged click survives kill -9 (and, with FULL, a power loss) exactly as before.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future

#: Upper bound of jobs in one transaction (a batch is whatever queued meanwhile, up to this).
MAX_BATCH = 256

_STOP = object()


class GroupCommit:
    """Run ``job(conn)`` callables in shared write transactions of ``store``.

    Parameters
    ----------
    store : StudyStore
        Its ``write_tx()`` opens the transaction (BEGIN IMMEDIATE behind the writer lock).
    max_batch : int
        Most jobs per transaction.
    """

    def __init__(self, store, max_batch: int = MAX_BATCH):
        self.store, self.max_batch = store, max_batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job, heavy: bool = False) -> Future:
        """Queue ``job``; the future resolves once its transaction is committed, with its
        result, its exception or the commit's. Never blocks (an event loop may call it).

        ``heavy``: a job that holds the writer lock for tens of milliseconds (a new session's
        plan and slot claim). Heavy jobs run one per transaction, taking turns with the
        batches of light jobs (clicks), so a click waits behind at most one of them in this
        process, however many participants start at once."""
        self._ensure_started()
        done: Future = Future()
        self._jobs.put((job, done, heavy))
        return done

    def run(self, job, heavy: bool = False):
        """:meth:`submit` and wait."""
        return self.submit(job, heavy).result()

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="psc6k-group-commit", daemon=True)
                    self._thread.start()

    def _take(self, light: list, heavy: deque, block: bool) -> bool:
        """Move queued jobs into ``light`` (up to ``max_batch``) and ``heavy``, waiting for
        one if ``block``; returns True once the stop marker was taken."""
        while len(light) < self.max_batch:
            try:
                item = self._jobs.get() if block else self._jobs.get_nowait()
            except queue.Empty:
                return False
            block = False
            if item is _STOP:
                return True
            job, done, is_heavy = item
            (heavy if is_heavy else light).append((job, done))
        return False

    def _loop(self) -> None:
        light: list = []
        heavy: deque = deque()
        stop = heavy_turn = False
        while True:
            if not stop:
                stop = self._take(light, heavy, block=not (light or heavy))
            if heavy and (heavy_turn or not light):
                self._commit([heavy.popleft()])
                heavy_turn = False
            elif light:
                batch, light = light, []
                self._commit(batch)
                heavy_turn = True
            elif stop:
                return

    def _commit(self, batch: list) -> None:
        outcomes = []
        try:
            with self.store.write_tx() as conn:
                # savepoints on the DBAPI cursor: SQLAlchemy's begin_nested costs more Python
                # than a click's own statements (see .prepared)
                cursor = conn.connection.dbapi_connection.cursor()
                for job, done in batch:
                    cursor.execute("SAVEPOINT psc6k_job")
                    try:
                        result = job(conn)
                    except BaseException as exc:  # the job's own failure: undo it alone
                        cursor.execute("ROLLBACK TO psc6k_job")
                        cursor.execute("RELEASE psc6k_job")
                        outcomes.append((done, None, exc))
                    else:
                        cursor.execute("RELEASE psc6k_job")
                        outcomes.append((done, result, None))
                cursor.close()
        except BaseException as exc:  # the commit failed: nothing of the batch is stored
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for done, result, exc in outcomes:  # durable now: answer
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(result)

