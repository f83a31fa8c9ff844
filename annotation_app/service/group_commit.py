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

    def submit(self, job) -> Future:
        """Queue ``job``; the future resolves once its transaction is committed, with its
        result, its exception or the commit's. Never blocks (an event loop may call it)."""
        self._ensure_started()
        done: Future = Future()
        self._jobs.put((job, done))
        return done

    def run(self, job):
        """:meth:`submit` and wait."""
        return self.submit(job).result()

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

    def _next_batch(self) -> tuple[list, bool]:
        first = self._jobs.get()
        if first is _STOP:
            return [], True
        batch, stop = [first], False
        while len(batch) < self.max_batch:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                self._commit(batch)

    def _commit(self, batch: list) -> None:
        outcomes = []
        try:
            with self.store.write_tx() as conn:
                for job, done in batch:
                    savepoint = conn.begin_nested()
                    try:
                        result = job(conn)
                    except BaseException as exc:  # the job's own failure: undo it alone
                        savepoint.rollback()
                        outcomes.append((done, None, exc))
                    else:
                        savepoint.commit()
                        outcomes.append((done, result, None))
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
