"""Worker-death handling of a pooled keypoint batch: the in-flight board the workers mark and
the error that names the sketches a dead worker was on."""

from __future__ import annotations

import os
import tempfile

from psc6k.errors import Psc6kError

__all__ = ["InFlightBoard", "WorkerDied"]

class WorkerDied(Psc6kError):
    """A worker process died (killed by a signal, the out-of-memory killer): the pool is gone.

    ``in_flight`` are the keys of the sketches being processed at that moment (one of them
    was the dying worker's), ``n_done`` the results received before."""

    def __init__(self, in_flight: list[str], n_done: int):
        self.in_flight, self.n_done = in_flight, n_done
        if in_flight:
            shown = ", ".join(in_flight[:4]) + (f" and {len(in_flight) - 4} more" if len(in_flight) > 4 else "")
            what = f"while processing {shown}"
        else:
            what = "between sketches"
        super().__init__(f"a worker process died abruptly (killed by a signal or the out-of-memory killer) {what}")


class InFlightBoard:
    """Which sketches the worker processes are on: one byte per task in a small temporary file
    (0 = waiting, 1 = started, 2 = finished), written by the workers with ``os.pwrite``.

    When a worker dies, the pool only says *that* it died; the board says which sketches were
    being processed (at most one per worker), so the error can name them.  Cost: two one-byte
    writes per sketch.
    """

    STARTED, FINISHED = b"\x01", b"\x02"
    _fds: dict = {}  # per worker process: board path -> open descriptor

    def __init__(self, n: int):
        fd, self.path = tempfile.mkstemp(prefix="psc6k-build-keypoints-", suffix=".inflight")
        with os.fdopen(fd, "wb") as fh:
            fh.truncate(n)

    def slot(self, index: int) -> tuple[str, int]:
        return self.path, index

    @classmethod
    def mark(cls, path: str, index: int, state: bytes) -> None:
        fd = cls._fds.get(path)
        if fd is None:
            fd = cls._fds[path] = os.open(path, os.O_WRONLY)
        os.pwrite(fd, state, index)

    def started(self) -> list[int]:
        """Indices of the tasks started and not finished."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        return [i for i, b in enumerate(data) if b == self.STARTED[0]]

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
