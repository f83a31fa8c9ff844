"""Scoring for the server: exactly ``psc6k eval``'s code path, wrapped for HTTP.

:func:`psc6k.submission.load_submission` validates, :func:`psc6k.pck.evaluate` scores and
``EvalResult.to_dict()`` is the reply, with the defaults of ``psc6k eval`` (alphas 0.05 and
0.10, no partial submissions, 1000 bootstrap resamples, seed 0). Nothing here recomputes or
re-validates a number; it only maps errors to HTTP statuses and, in private mode, drops the
non-aggregate parts of the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from psc6k.errors import Psc6kError, SubmissionError
from psc6k.formats import read_annotations
from psc6k.pck import DEFAULT_ALPHAS, SCORER_VERSION, evaluate
from psc6k.submission import ReadLimits, SubmissionTooLarge, load_submission

from .body import RawUpload, check_headers, receive_submission
from .private import private_reply
from .settings import ServerSettings
from psc6k.jsonsafe import json_safe

log = logging.getLogger("psc6k.server")

@dataclass
class Scored:
    result: dict  # the reply body (before submission_id), already private-filtered if needed
    method: str
    kind: str


class Scorer:
    """Holds the annotations and the concurrency limits of one server process."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.annotations = read_annotations(settings.annotations)
        # Messages name the file, not where it lives on the server.
        self.annotations.source = os.path.basename(settings.annotations)
        with open(settings.annotations, "rb") as fh:
            self.annotations_sha256 = hashlib.sha256(fh.read()).hexdigest()
        self.scorer_version = SCORER_VERSION
        self._loop = None
        self._semaphore: asyncio.Semaphore | None = None
        self._admitted = 0  # running + waiting
        self._uploads: dict[str, int] = {}  # uploads in progress per client address

    # -- admission -----------------------------------------------------------------------------
    # Two stages, so that no upload can starve scoring: (1) receiving a body costs a socket and at
    # most SPOOL_BYTES of memory (the rest is spooled to disk); it is bounded per client address
    # and in total, and times out on its own clock (total and idle). (2) Only a request whose
    # whole body has arrived joins the scoring queue (max_pending) and takes one of the
    # max_concurrent scoring slots.
    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # one per event loop (tests start several)
            self._semaphore = asyncio.Semaphore(max(1, self.settings.max_concurrent_scoring))
            self._loop = loop
            self._uploads = {}
        return self._semaphore

    @contextlib.contextmanager
    def uploading(self, client: str):
        """Count one upload in progress from ``client``; 429 / 503 beyond the bounds."""
        self._sem()
        settings = self.settings
        total = sum(self._uploads.values())
        if total >= settings.max_uploads:
            raise HTTPException(status_code=503, detail=f"the server is receiving {total} uploads; retry shortly",
                                headers={"Retry-After": "5"})
        if self._uploads.get(client, 0) >= settings.max_uploads_per_client:
            raise HTTPException(status_code=429, detail=f"{settings.max_uploads_per_client} uploads from your "
                                "address are already in progress; finish those first", headers={"Retry-After": "5"})
        self._uploads[client] = self._uploads.get(client, 0) + 1
        try:
            yield
        finally:
            self._uploads[client] -= 1
            if not self._uploads[client]:
                del self._uploads[client]

    def admit(self) -> None:
        """Refuse (503) when too many scorings are running or waiting in this process."""
        capacity = max(1, self.settings.max_concurrent_scoring) + max(0, self.settings.max_pending_scoring)
        if self._admitted >= capacity:
            raise HTTPException(status_code=503, detail=f"the scorer is busy ({self._admitted} submissions "
                                "in progress); retry shortly", headers={"Retry-After": "5"})
        self._admitted += 1

    def release(self) -> None:
        self._admitted -= 1

    async def score_request(self, request) -> Scored:
        """Receive, validate and score the submission in ``request``.

        Headers are checked first (415 / 413 without reading). The body is received under the
        per-client upload bounds and its own timeouts; only then does the request queue for a
        scoring slot. Reading and scoring (CPU work) run in a worker thread.
        """
        settings = self.settings
        check_headers(request, settings.max_body_bytes)
        client = request.client.host if request.client else "unknown"
        with self.uploading(client):
            raw = await receive_submission(request, settings.max_body_bytes, timeout_s=settings.upload_timeout_s,
                                           idle_s=settings.upload_idle_timeout_s)
        try:
            self.admit()
            try:
                async with self._sem():
                    return await run_in_threadpool(self.score_sync, raw)
            finally:
                self.release()
        finally:
            raw.close()

    # -- the work ------------------------------------------------------------------------------
    def read(self, raw: RawUpload):
        """The one reader, with this server's limits; its errors as HTTP statuses (413 / 422)."""
        settings = self.settings
        try:
            # at most one entry per annotated pair (+1, so that an extra pair is named by the alignment):
            # more is refused while parsing, which bounds the CPU a request can cost
            limits = ReadLimits(max_bytes=settings.max_decompressed_bytes, max_side=settings.max_flow_side,
                                max_pairs=len(self.annotations) + 1)
            return load_submission(raw.file, source=raw.filename, limits=limits)
        except SubmissionTooLarge as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        except Psc6kError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except MemoryError:
            raise HTTPException(status_code=413, detail="submission too large to load in memory") from None
        except (ValueError, OverflowError, TypeError, RecursionError, KeyError, IndexError) as exc:
            # load_submission should turn every bad input into SubmissionError; never let a gap
            # there become a 500 (the traceback is logged for the maintainers).
            log.warning("load_submission raised %s instead of SubmissionError", type(exc).__name__, exc_info=True)
            raise HTTPException(status_code=422, detail=f"{raw.filename}: cannot read the submission "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def score_sync(self, raw: RawUpload) -> Scored:
        settings = self.settings
        sub = self.read(raw)
        try:
            res = evaluate(self.annotations, sub, DEFAULT_ALPHAS, allow_partial=False,
                           n_bootstrap=settings.n_bootstrap, seed=settings.seed)
        except SubmissionError as exc:
            detail = self._private_alignment_error(sub) if settings.private else str(exc)
            raise HTTPException(status_code=422, detail=detail) from None
        except Psc6kError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except MemoryError:
            raise HTTPException(status_code=413, detail="submission too large to score in memory") from None
        full = json_safe(res.to_dict())
        reply = private_reply(full) if settings.private else dict(full)
        return Scored(result=reply, method=sub.method, kind=sub.kind)

    def _private_alignment_error(self, sub) -> str:
        """Alignment errors without naming pairs of the hidden split (only the submitter's own)."""
        index = self.annotations.index()
        submitted = list(zip(sub.photo, sub.sketch))
        unknown = [p for p in submitted if p not in index]
        if unknown:
            first = ", ".join(f"(photo={p!r}, sketch={s!r})" for p, s in unknown[:3])
            return (f"{len(unknown)} submitted pair(s) are not in the hidden split: {first}"
                    f"{' ...' if len(unknown) > 3 else ''}; paths must match the published pair list exactly")
        missing = len(self.annotations) - len(set(submitted) & set(index))
        return f"{missing} of {len(self.annotations)} pairs of the hidden split are missing from the submission"
