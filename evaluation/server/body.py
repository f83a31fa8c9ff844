"""Reading request bodies without trusting them: size caps on the wire and after decompression.

Everything here runs before :func:`psc6k.submission.load_submission` sees a byte, so that an
oversized upload, a gzip bomb or an NPZ whose members claim gigabytes is answered with 413 (or a
400 naming the problem) without allocating the memory it asks for.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
#: NPZ members above this count are not a submission (it has at most 6 arrays).
MAX_NPZ_MEMBERS = 32
#: ``.npy`` headers are a few hundred bytes; numpy itself refuses more than 10,000.
MAX_NPY_HEADER = 10_000

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


async def read_body_capped(request: Request, limit: int) -> bytes:
    """Read the request body, refusing (413) as soon as it exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a body sent
    without one (chunked) is counted as it streams in, so it never sits in memory beyond the cap.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {_mb(int(declared))} is over the limit of {_mb(limit)}")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"request body is over the limit of {_mb(limit)}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def gunzip_capped(data: bytes, limit: int, what: str = "gzip data") -> bytes:
    """Decompress (possibly multi-member) gzip ``data``, refusing (413) beyond ``limit`` bytes out.

    Input is fed in 64 KiB pieces and each step's output is capped (``max_length``), so a gzip
    bomb costs at most ``limit`` bytes and no step copies more than one piece of input.
    Truncated or corrupt streams and trailing garbage are 400s.
    """
    step_in, step_out = 1 << 16, 1 << 20
    out = bytearray()
    members = 0
    while True:  # one gzip member per iteration
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        view, pos = memoryview(data), 0
        try:
            while not decomp.eof:
                if decomp.unconsumed_tail:
                    piece = decomp.unconsumed_tail
                elif pos < len(data):
                    piece = view[pos:pos + step_in]
                    pos += len(piece)
                else:
                    break  # input exhausted before the end of the member
                out += decomp.decompress(piece, step_out)
                if len(out) > limit:
                    raise BodyTooLarge(f"{what} decompresses to more than {_mb(limit)} (the limit)")
        except zlib.error as exc:
            raise bad_request(f"{what} is corrupt ({exc})") from None
        if not decomp.eof:
            raise bad_request(f"{what} is truncated (the stream ends before the end of the gzip member)")
        members += 1
        rest = decomp.unused_data + bytes(view[pos:])
        if not rest or not rest.strip(b"\x00"):
            return bytes(out)
        if not rest.startswith(GZIP_MAGIC):
            raise bad_request(f"{what} has {len(rest)} unexpected bytes after gzip member {members}")
        data = rest


def check_npz(data: bytes, limit: int) -> None:
    """Refuse an NPZ before numpy reads it: members over ``limit`` in total (413), non-``.npy``
    members, object (pickle) arrays, or ``.npy`` headers whose shape disagrees with the member's
    size (a header claiming a huge array in a small member would make numpy allocate it)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise bad_request(f"body is not a valid NPZ (zip) file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise bad_request("NPZ file is empty (no arrays)")
        if len(infos) > MAX_NPZ_MEMBERS:
            raise bad_request(f"NPZ file has {len(infos)} members; a submission has at most 6 arrays")
        total = sum(info.file_size for info in infos)
        if total > limit:
            raise BodyTooLarge(f"NPZ members decompress to {_mb(total)}, over the limit of {_mb(limit)}")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise bad_request(f"NPZ member {name!r} is not a .npy array")
            if info.flag_bits & 0x1:
                raise bad_request(f"NPZ member {name!r} is encrypted")
            try:
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(
                            member, max_header_size=MAX_NPY_HEADER)
                    elif version in ((2, 0), (3, 0)):
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(
                            member, max_header_size=MAX_NPY_HEADER)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                    header_len = member.tell()
            except HTTPException:
                raise
            except Exception as exc:  # numpy / zipfile raise ValueError, BadZipFile, EOFError, ...
                raise bad_request(f"NPZ member {name!r} is not a readable .npy array ({exc})") from None
            if dtype.hasobject:
                raise bad_request(f"NPZ member {name!r} holds Python objects (dtype {dtype}), which need pickle; "
                                  "use numeric and string arrays")
            n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if header_len + n_bytes != info.file_size:
                raise bad_request(f"NPZ member {name!r}: header says shape {list(shape)} of {dtype} "
                                  f"({n_bytes} bytes) but the member holds {info.file_size - header_len} bytes")


@dataclass
class Payload:
    """A request body reduced to the bytes of one submission (JSON text or NPZ)."""

    data: bytes
    container: str  # "json" | "npz"
    filename: str


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
    async def replay():
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=2, max_fields=50, max_part_size=1024 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"malformed multipart body: {exc.message}") from None
    except Exception as exc:  # python-multipart raises its own errors on garbage
        raise bad_request(f"malformed multipart body ({type(exc).__name__}: {exc})") from None
    try:
        upload = form.get("file")
        if upload is None:
            fields = sorted(set(form.keys()))
            raise bad_request(f"multipart body has no field 'file' (fields: {fields}); send the submission "
                              "as the file field 'file'")
        if not isinstance(upload, UploadFile):
            raise bad_request("multipart field 'file' must be a file upload, not a text field")
        data = await upload.read()
        return data, upload.filename or "upload"
    finally:
        await form.close()


def check_headers(request: Request, max_body: int) -> tuple[str, str]:
    """Content type, encoding and declared length, checked before anything is read or queued.

    Returns ``(media_type, content_encoding)``; raises 415 or 413.
    """
    media = _media_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise bad_request(f"unsupported Content-Encoding {encoding!r}; use gzip or none", 415)
    if media not in JSON_TYPES + NPZ_TYPES + (MULTIPART_TYPE,):
        shown = media or "(none)"
        raise bad_request(f"unsupported Content-Type {shown}; send application/json (optionally gzip-encoded), "
                          "application/octet-stream (NPZ) or multipart/form-data with a file field 'file'", 415)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise bad_request(f"invalid Content-Length header {declared!r}") from None
        if declared_n > max_body:
            raise BodyTooLarge(f"request body of {_mb(declared_n)} is over the limit of {_mb(max_body)}")
    return media, encoding


@dataclass
class RawUpload:
    """The bytes as received (still possibly gzip-encoded), before any CPU-heavy decoding."""

    data: bytes
    media: str
    encoding: str
    filename: str | None = None  # multipart uploads only


async def receive_submission(request: Request, max_body: int) -> RawUpload:
    """Read the body of a ``POST /score`` or ``POST /submissions`` under the size cap (async part).

    Accepted: ``application/json`` (optionally ``Content-Encoding: gzip``), NPZ as
    ``application/octet-stream``, or ``multipart/form-data`` with the submission in the file field
    ``file``. Raises HTTPException 413 / 415 / 400.
    """
    media, encoding = check_headers(request, max_body)
    body = await read_body_capped(request, max_body)
    if media == MULTIPART_TYPE:
        if encoding != "identity":
            raise bad_request("gzip-encoded multipart bodies are not supported; gzip the file inside instead", 415)
        data, filename = await _multipart_file(request, body)
        return RawUpload(data, media, encoding, filename)
    return RawUpload(body, media, encoding)


def decode_submission(raw: RawUpload, max_decompressed: int) -> Payload:
    """Decompress and sniff the container (CPU work: run it in a worker thread).

    Raises HTTPException: 413 (decompressed too large), 415 (content type disagrees with the
    bytes), 400 (unreadable gzip / zip / NPZ).
    """
    body = raw.data
    if raw.media == MULTIPART_TYPE:
        filename = raw.filename or "upload"
        if not body:
            raise bad_request("the uploaded file 'file' is empty")
        if body.startswith(GZIP_MAGIC):
            body = gunzip_capped(body, max_decompressed, f"uploaded file {filename!r}")
        if body.startswith(ZIP_MAGIC) or body.startswith(EMPTY_ZIP_MAGIC):
            check_npz(body, max_decompressed)
            return Payload(body, "npz", filename)
        return Payload(body, "json", filename)
    if raw.encoding in ("gzip", "x-gzip"):
        if not body:
            raise bad_request("empty request body; expected a submission")
        body = gunzip_capped(body, max_decompressed, "gzip-encoded request body")
    if not body:
        raise bad_request("empty request body; expected a submission")
    if raw.media in JSON_TYPES:
        if body.startswith(GZIP_MAGIC):  # gzip JSON sent without Content-Encoding
            body = gunzip_capped(body, max_decompressed, "gzip JSON body")
        if body.startswith(ZIP_MAGIC):
            raise bad_request("body is an NPZ (zip) file but Content-Type says JSON; send NPZ as "
                              "application/octet-stream", 415)
        return Payload(body, "json", "submission.json")
    if not (body.startswith(ZIP_MAGIC) or body.startswith(EMPTY_ZIP_MAGIC)):
        hint = " (it looks like JSON: send it as application/json)" if body.lstrip()[:1] in (b"{", b"[") else ""
        raise bad_request(f"application/octet-stream body is not an NPZ (zip) file{hint}", 415)
    check_npz(body, max_decompressed)
    return Payload(body, "npz", "submission.npz")
