"""psc6k.parallel: the one worker pool (spawned workers, results in input order)."""

from __future__ import annotations

import math

import pytest

from psc6k.parallel import map_ordered, resolve_workers


def test_resolve_workers():
    assert resolve_workers(0) >= 1
    assert resolve_workers(8, 3) == 3 and resolve_workers(2, 0) == 1 and resolve_workers(1) == 1
    with pytest.raises(ValueError):
        resolve_workers(-1)


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_results_in_input_order_whatever_the_workers(chunksize):
    tasks = list(range(40, 0, -1))
    serial = list(map_ordered(math.factorial, tasks, 1))
    assert serial == [math.factorial(t) for t in tasks]
    assert list(map_ordered(math.factorial, tasks, 2, chunksize=chunksize)) == serial


def test_worker_errors_reach_the_caller_and_stopping_early_is_clean():
    with pytest.raises(ValueError):
        list(map_ordered(math.factorial, [3, -1, 4] * 5, 2))
    it = map_ordered(math.factorial, range(200), 2)
    assert next(it) == 1
    it.close()  # stops the pool, drops the queued tasks
