"""The one worker pool of psc6k: CPU-bound tasks over processes, results in input order.

Why *spawn*, never *fork*: the parent has usually imported OpenCV and NumPy/BLAS, whose thread
pools are running. ``fork`` copies only the calling thread, so a lock that another thread held
at that moment stays locked forever in the child, and the worker can deadlock in its first
``cv2`` or BLAS call (seen with OpenCV's thread pool; CPython 3.12 warns about forking a
multi-threaded process, and 3.14 no longer forks by default on Linux). ``spawn`` starts clean
interpreters; it costs an import of the task's module per worker (well under a second), paid once
per pool, not per task. Tasks and their functions must therefore be picklable (module-level
functions, plain data), and results cannot depend on state the parent set up after import.

Each worker limits OpenCV and BLAS to one thread: the workers are the parallelism, and N workers
on N cores must not each start N threads. :class:`concurrent.futures.ProcessPoolExecutor` is used
rather than :class:`multiprocessing.Pool` because a worker that dies (out of memory, killed)
raises :class:`~concurrent.futures.process.BrokenProcessPool` instead of hanging forever.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int, n_tasks: int | None = None) -> int:
    """Worker processes to start: ``0`` means one per CPU; never more than the tasks, at least 1.

    >>> resolve_workers(8, 3), resolve_workers(1, 100), resolve_workers(4, 0)
    (3, 1, 1)
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        workers = os.cpu_count() or 1
    if n_tasks is not None:
        workers = min(workers, n_tasks)
    return max(1, workers)


def single_threaded_worker() -> None:
    """Initializer of every pool worker: one OpenCV thread and one BLAS/OpenMP thread."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # OpenCV missing or built without threads: nothing to limit
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is optional (scikit-learn brings it)
        pass


def map_ordered(func: Callable[[T], R], tasks: Iterable[T], workers: int = 1, *,
                chunksize: int | None = None) -> Iterator[R]:
    """``func(task)`` for every task, yielded in the order of ``tasks``.

    Parameters
    ----------
    func : callable
        A module-level (picklable) function of one task.
    tasks : iterable
        Picklable task descriptions.
    workers : int
        Processes (see :func:`resolve_workers`); ``1`` runs in this process, without a pool.
    chunksize : int, optional
        Tasks sent to a worker at once (default: about 8 chunks per worker, at most 32 tasks).

    Yields
    ------
    The results, in input order, as they become available; results do not depend on
    ``workers``, as long as ``func`` depends only on its task.
    """
    tasks = list(tasks)
    workers = resolve_workers(workers, len(tasks))
    if workers == 1:
        for task in tasks:
            yield func(task)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if chunksize is None:
        chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=single_threaded_worker)
    try:
        yield from pool.map(func, tasks, chunksize=chunksize)
    finally:
        # also when the caller stops early (an error while consuming): drop the queued tasks
        pool.shutdown(wait=True, cancel_futures=True)
