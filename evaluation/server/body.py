"""Receiving a submission over HTTP: headers, the body on the wire, multipart. Nothing else.

What the bytes *mean* — containers, gzip, NPZ members and headers, every cap on what a
submission may cost to read — is :func:`psc6k.submission.load_submission`'s job, the same reader
``psc6k eval`` uses, so the CLI and the server accept and refuse the same files with the same
message. This module only:

* checks the headers (415 for an unknown type or encoding, 413 for a declared length over the cap)
  before anything is read or queued;
* receives the body under the wire cap, on its own clock (a total and an idle timeout, 408), into a
  spooled temporary file (memory holds at most :data:`SPOOL_BYTES` of it; the rest is on disk);
* takes the file field out of a multipart body (spooled too);
* refuses a body whose bytes contradict its Content-Type / Content-Encoding (415 / 400).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from psc6k.submission import GZIP_MAGIC, ZIP_MAGICS

#: Bytes of a body kept in memory while it arrives; beyond, it is spooled to a temporary file.
SPOOL_BYTES = 1024 * 1024

JSON_TYPES = ("application/json", "text/json")
NPZ_TYPES = ("application/octet-stream", "application/x-npz", "application/zip", "application/x-zip-compressed")
MULTIPART_TYPE = "multipart/form-data"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


class BodyTooLarge(HTTPException):
    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


def bad_request(detail: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_headers(request: Request, max_body: int) -> tuple[str, str]:
    """Content type, encoding and declared length, checked before anything is read or queued.

    Returns ``(media_type, content_encoding)``; raises 415 or 413.
    """
    media = _media_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise bad_request(f"unsupported Content-Encoding {encoding[:40]!r}; use gzip or none", 415)
    if media not in JSON_TYPES + NPZ_TYPES + (MULTIPART_TYPE,):
        shown = media[:80] or "(none)"
        raise bad_request(f"unsupported Content-Type {shown}; send application/json (optionally gzip-encoded), "
                          "application/octet-stream (NPZ) or multipart/form-data with a file field 'file'", 415)
    if media == MULTIPART_TYPE and encoding != "identity":
        raise bad_request("gzip-encoded multipart bodies are not supported; gzip the file inside instead", 415)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise bad_request(f"invalid Content-Length header {declared[:40]!r}") from None
        if declared_n > max_body:
            raise BodyTooLarge(f"request body of {_mb(declared_n)} is over the limit of {_mb(max_body)}")
    return media, encoding


@dataclass
class RawUpload:
    """A received submission: a seekable file (spooled) holding the bytes as sent, still possibly
    gzip-encoded — :func:`psc6k.submission.load_submission` reads it."""

    file: object
    media: str
    encoding: str
    filename: str

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:  # pragma: no cover - closing a temp file
            pass


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


async def _spool_body(request: Request, limit: int, timeout_s: float, idle_s: float):
    """The body into a SpooledTemporaryFile, refusing (413) beyond ``limit`` bytes and (408) when
    it takes longer than ``timeout_s`` in all or ``idle_s`` without a byte."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    total = 0
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise HTTPException(status_code=408, detail=f"the upload took longer than {timeout_s:g} s")
            chunk = await _next_chunk(stream, min(idle_s, left))
            if chunk is _END:
                break
            if chunk is _SILENT:
                if idle_s < left:
                    raise HTTPException(status_code=408, detail=f"the upload sent nothing for {idle_s:g} s; "
                                        "send the whole body without pausing")
                continue  # the total clock ran out: refused at the top of the loop
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"request body is over the limit of {_mb(limit)}")
            if chunk:
                spool.write(chunk)
    except ClientDisconnect:
        spool.close()
        raise bad_request("the client disconnected before sending the whole body") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def _multipart_file(request: Request, spool) -> tuple[object, str]:
    async def replay():
        while True:
            chunk = spool.read(1 << 16)
            if not chunk:
                return
            yield chunk

    parser = MultiPartParser(request.headers, replay(), max_files=2, max_fields=50, max_part_size=1024 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"malformed multipart body: {exc.message}") from None
    except Exception as exc:  # python-multipart raises its own errors on garbage
        raise bad_request(f"malformed multipart body ({type(exc).__name__}: {str(exc)[:200]})") from None
    finally:
        spool.close()
    upload = form.get("file")
    if upload is None:
        fields = sorted(set(form.keys()))
        await form.close()
        shown = fields[:10] + ([f"... {len(fields) - 10} more"] if len(fields) > 10 else [])
        raise bad_request(f"multipart body has no field 'file' (fields: {shown}); send the submission "
                          "as the file field 'file'")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise bad_request("multipart field 'file' must be a file upload, not a text field")
    for key, value in form.multi_items():  # keep only the file we read
        if value is not upload and isinstance(value, UploadFile):
            await value.close()
    upload.file.seek(0)
    return upload.file, (upload.filename or "upload")[:200]


async def receive_submission(request: Request, max_body: int, *, timeout_s: float = 300.0,
                             idle_s: float = 30.0) -> RawUpload:
    """Receive the body of a ``POST /score`` or ``POST /submissions`` (async; no CPU-heavy work).

    Accepted: ``application/json`` (optionally ``Content-Encoding: gzip``), NPZ as
    ``application/octet-stream``, or ``multipart/form-data`` with the submission in the file field
    ``file``. Raises HTTPException 413 / 415 / 408 / 400.
    """
    media, encoding = check_headers(request, max_body)
    spool = await _spool_body(request, max_body, timeout_s, idle_s)
    if media == MULTIPART_TYPE:
        file, filename = await _multipart_file(request, spool)
        return RawUpload(file, media, encoding, filename)
    raw = RawUpload(spool, media, encoding, "submission.json" if media in JSON_TYPES else "submission.npz")
    try:
        _check_bytes_match_headers(raw)
    except BaseException:
        raw.close()
        raise
    return raw


def _check_bytes_match_headers(raw: RawUpload) -> None:
    """The HTTP-level promise of the headers against the first bytes (415 / 400)."""
    head = raw.file.read(4)
    raw.file.seek(0)
    if raw.encoding in ("gzip", "x-gzip"):
        if head and not head.startswith(GZIP_MAGIC):
            raise bad_request("Content-Encoding says gzip but the body is not gzip data")
        return
    if raw.media in JSON_TYPES and head.startswith(ZIP_MAGICS):
        raise bad_request("body is an NPZ (zip) file but Content-Type says JSON; send NPZ as "
                          "application/octet-stream", 415)
    if raw.media in NPZ_TYPES and head and not head.startswith(ZIP_MAGICS):
        hint = " (it looks like JSON: send it as application/json)" if head.lstrip()[:1] in (b"{", b"[") else ""
        raise bad_request(f"{raw.media} body is not an NPZ (zip) file{hint}", 415)
