"""Receiving a submission over HTTP: headers, the body on the wire, multipart. Nothing else.

What the bytes *mean* — containers, gzip, NPZ members and headers, every cap on what a
submission may cost to read — is :func:`psc6k.submission.load_submission`'s job, the same reader
``psc6k eval`` uses, so the CLI and the server accept and refuse the same files with the same
message. This module only:

* checks the headers (415 for an unknown type or encoding, 413 for a declared length over the cap)
  before anything is read or queued;
* receives the body under the wire cap, on its own clocks (a total and an idle timeout, 408), into a
  spooled temporary file (:func:`psc6k_web.uploads.spool_body`: memory holds at most
  ``SPOOL_BYTES`` of it; the rest is on disk);
* takes the file field out of a multipart body (spooled too);
* refuses a body whose bytes contradict its Content-Type / Content-Encoding (415 / 400).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from psc6k.errors import BadRequestError, TooLargeError, UnsupportedMediaTypeError
from psc6k.submission import GZIP_MAGIC, ZIP_MAGICS
from psc6k_web.uploads import megabytes, spool_body

JSON_TYPES = ("application/json", "text/json")
NPZ_TYPES = ("application/octet-stream", "application/x-npz", "application/zip", "application/x-zip-compressed")
MULTIPART_TYPE = "multipart/form-data"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_headers(request: Request, max_body: int) -> tuple[str, str]:
    """Content type, encoding and declared length, checked before anything is read or queued.

    Returns ``(media_type, content_encoding)``; raises 415 or 413.
    """
    media = _media_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {encoding[:40]!r}; use gzip or none")
    if media not in JSON_TYPES + NPZ_TYPES + (MULTIPART_TYPE,):
        shown = media[:80] or "(none)"
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {shown}; send application/json (optionally gzip-encoded), "
            "application/octet-stream (NPZ) or multipart/form-data with a file field 'file'")
    if media == MULTIPART_TYPE and encoding != "identity":
        raise UnsupportedMediaTypeError("gzip-encoded multipart bodies are not supported; gzip the file inside instead")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length header {declared[:40]!r}") from None
        if declared_n > max_body:
            raise TooLargeError(f"request body of {megabytes(declared_n)} is over the limit of {megabytes(max_body)}")
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
        raise BadRequestError(f"malformed multipart body: {exc.message}") from None
    except Exception as exc:  # python-multipart raises its own errors on garbage
        raise BadRequestError(f"malformed multipart body ({type(exc).__name__}: {str(exc)[:200]})") from None
    finally:
        spool.close()
    upload = form.get("file")
    if upload is None:
        fields = sorted(set(form.keys()))
        await form.close()
        shown = fields[:10] + ([f"... {len(fields) - 10} more"] if len(fields) > 10 else [])
        raise BadRequestError(f"multipart body has no field 'file' (fields: {shown}); send the submission "
                              "as the file field 'file'")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise BadRequestError("multipart field 'file' must be a file upload, not a text field")
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
    ``file``. Raises 413 / 415 / 408 / 400 (:mod:`psc6k.errors` classes).
    """
    media, encoding = check_headers(request, max_body)
    spool = await spool_body(request, max_body, timeout_s, idle_s)
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
            raise BadRequestError("Content-Encoding says gzip but the body is not gzip data")
        return
    if raw.media in JSON_TYPES and head.startswith(ZIP_MAGICS):
        raise UnsupportedMediaTypeError("body is an NPZ (zip) file but Content-Type says JSON; send NPZ as "
                                        "application/octet-stream")
    if raw.media in NPZ_TYPES and head and not head.startswith(ZIP_MAGICS):
        hint = " (it looks like JSON: send it as application/json)" if head.lstrip()[:1] in (b"{", b"[") else ""
        raise UnsupportedMediaTypeError(f"{raw.media} body is not an NPZ (zip) file{hint}")
