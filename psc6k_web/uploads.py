"""Admission of big uploads (the scoring server's submissions), independent of what they hold.

Two stages, so that no upload can starve the work behind it:

1. receiving a body costs a socket and at most :data:`SPOOL_BYTES` of memory (the rest is
   spooled to disk); it is bounded per client address and in total (:class:`UploadGate`), and
   it runs on its own clocks, a total deadline and an idle timeout (:func:`spool_body`);
2. only a request whose whole body has arrived queues (``max_pending``) for one of the
   ``max_concurrent`` work slots (:class:`WorkSlots`).

Refusals are :mod:`psc6k.errors` classes: 408 (clocks), 413 (size), 400 (client gone),
429 (this client has too many uploads running), 503 (the process is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile

from starlette.requests import ClientDisconnect

from psc6k.errors import BadRequestError, RateLimitedError, RequestTimeoutError, TooLargeError, UnavailableError

#: Bytes of a body kept in memory while it arrives; beyond, it is spooled to a temporary file.
SPOOL_BYTES = 1024 * 1024
#: ``Retry-After`` (s) of a refusal for being busy: uploads and scorings last seconds.
BUSY_RETRY_S = 5


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


_END = object()  # the body has ended
_SILENT = object()  # no chunk within the wait


async def _next_chunk(stream, wait_s: float):
    """The next chunk of ``stream``, :data:`_END` at its end, or :data:`_SILENT` after ``wait_s``.

    The wait is ``asyncio.wait`` on a separate task, which is cancelled on time-out, rather than
    ``asyncio.wait_for`` inside ``asyncio.timeout``: on Python 3.11 that nesting swallows the outer
    deadline when a chunk arrives just as it fires (about 1 in 8 tries with a byte every
    millisecond), so a slow trickle could hold an upload slot for ever.
    """
    async def step():
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return _END

    task = asyncio.ensure_future(step())
    try:
        done, _ = await asyncio.wait({task}, timeout=max(wait_s, 0.0))
    finally:
        if not task.done():
            task.cancel()
    return task.result() if done else _SILENT


async def spool_body(request, limit: int, timeout_s: float, idle_s: float):
    """The body of ``request`` (anything with an async ``stream()``) in a SpooledTemporaryFile,
    refused with 413 beyond ``limit`` bytes and 408 when it takes longer than ``timeout_s`` in
    all or ``idle_s`` without a byte. The file is positioned at its start."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    total = 0
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeoutError(f"the upload took longer than {timeout_s:g} s")
            chunk = await _next_chunk(stream, min(idle_s, left))
            if chunk is _END:
                break
            if chunk is _SILENT:
                if idle_s < left:
                    raise RequestTimeoutError(f"the upload sent nothing for {idle_s:g} s; "
                                              "send the whole body without pausing")
                continue  # the total clock ran out: refused at the top of the loop
            total += len(chunk)
            if total > limit:
                raise TooLargeError(f"request body is over the limit of {megabytes(limit)}")
            if chunk:
                spool.write(chunk)
    except ClientDisconnect:
        spool.close()
        raise BadRequestError("the client disconnected before sending the whole body") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


class UploadGate:
    """Uploads being received at once: at most ``per_client`` per client address (429 beyond)
    and ``total`` in this process (503 beyond)."""

    def __init__(self, per_client: int, total: int):
        self.per_client, self.total = int(per_client), int(total)
        self.running: dict[str, int] = {}

    @contextlib.contextmanager
    def uploading(self, client: str):
        """Count one upload in progress from ``client`` while the block runs."""
        total = sum(self.running.values())
        if total >= self.total:
            raise UnavailableError(f"the server is receiving {total} uploads; retry shortly", retry_after=BUSY_RETRY_S)
        if self.running.get(client, 0) >= self.per_client:
            raise RateLimitedError(f"{self.per_client} uploads from your address are already in progress; "
                                   "finish those first", retry_after=BUSY_RETRY_S)
        self.running[client] = self.running.get(client, 0) + 1
        try:
            yield
        finally:
            self.running[client] -= 1
            if not self.running[client]:
                del self.running[client]


class WorkSlots:
    """``concurrent`` jobs at once and ``pending`` waiting for a slot; 503 beyond."""

    def __init__(self, concurrent: int, pending: int):
        self.concurrent, self.pending = max(1, int(concurrent)), max(0, int(pending))
        self.admitted = 0  # running + waiting
        self._loop = None
        self._semaphore: asyncio.Semaphore | None = None

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # one per event loop (tests start several)
            self._semaphore, self._loop = asyncio.Semaphore(self.concurrent), loop
        return self._semaphore

    def admit(self) -> None:
        """Count one job in (refused with 503 when running + waiting is at capacity)."""
        if self.admitted >= self.concurrent + self.pending:
            raise UnavailableError(f"the server is busy ({self.admitted} submissions in progress); retry shortly",
                                   retry_after=BUSY_RETRY_S)
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    @contextlib.asynccontextmanager
    async def slot(self):
        """Admit, wait for a slot, run the block in it."""
        self.admit()
        try:
            async with self._sem():
                yield
        finally:
            self.release()
