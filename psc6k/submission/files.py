"""Submission files: :func:`load_submission` (path, bytes or stream; the container recognised by
its first bytes) and :func:`save_submission`.

This is the one reader of submission bytes, used by ``psc6k eval`` and by the scoring server alike
(the server adds only HTTP concerns), so both accept and refuse the same files with the same
message. Nothing is materialised before it has been checked against :class:`ReadLimits` (see
:mod:`psc6k.submission.json_reader` and :mod:`psc6k.submission.npz_reader` for what each reader
holds at its peak).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from psc6k.errors import SubmissionError
from psc6k.submission.checks import check_values
from psc6k.submission.json_reader import CappedStream, JsonReader
from psc6k.submission.model import (CONFIDENCE_FIELDS, DIRECTIONS, GZIP_MAGIC, ReadLimits, Submission,
                                    SubmissionTooLarge, mb, one_line)
from psc6k.submission.npz_reader import read_npz

#: First bytes a JSON text may start with (after whitespace).
_JSON_FIRST = b'{["-0123456789tfn'


class _Source:
    """An open, seekable binary stream over a path, bytes or a file object, with its name."""

    def __init__(self, src, source, limits: ReadLimits):
        self.own = False
        self.size = None
        if isinstance(src, (bytes, bytearray, memoryview)):
            self.fh = io.BytesIO(src if isinstance(src, bytes) else bytes(src))
            self.name = source or "submission"
            self.size = len(src)
        elif hasattr(src, "read"):
            self.fh = src
            self.name = source or getattr(src, "name", None) or "submission"
            if not isinstance(self.name, str):
                self.name = "submission"
            if not (hasattr(src, "seekable") and src.seekable()):
                raise SubmissionError("the stream must be seekable", source=self.name)
        else:
            path = Path(src)
            self.name = source or str(path)
            try:
                st = os.stat(path)  # before open(): opening a FIFO would block
            except FileNotFoundError:
                raise SubmissionError("file not found", source=self.name) from None
            except OSError as exc:
                raise SubmissionError(f"cannot read the file ({exc.strerror or exc})", source=self.name) from None
            if stat.S_ISDIR(st.st_mode):
                raise SubmissionError("is a directory; expected a submission file (.npz, .json or .json.gz)",
                                      source=self.name)
            if not stat.S_ISREG(st.st_mode):
                raise SubmissionError("is not a regular file (a FIFO, socket or device?); expected a "
                                      "submission file", source=self.name)
            try:
                self.fh = open(path, "rb")
            except OSError as exc:
                raise SubmissionError(f"cannot read the file ({exc.strerror or exc})", source=self.name) from None
            self.own = True
            self.size = st.st_size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.own:
            self.fh.close()


def load_submission(src, *, source=None, max_decompressed: int | None = None,
                    limits: ReadLimits | None = None) -> Submission:
    """Read and validate a submission from a path, raw bytes or a seekable binary file object.

    The container is recognised by its first bytes (NPZ = zip, gzip, else JSON), so a file's
    extension does not matter. Every check that :class:`ReadLimits` implies happens before the
    memory it would cost is allocated (see the module docstring for the peak).

    Parameters
    ----------
    src : path-like, bytes or binary file object
    source : str, optional
        Name used in error messages (defaults to the path).
    max_decompressed : int, optional
        Shortcut for ``limits.max_bytes``: largest decompressed JSON text / declared NPZ arrays.
    limits : ReadLimits, optional
        Caps on bytes, flow size and pair count (defaults: :class:`ReadLimits`).

    Raises
    ------
    SubmissionTooLarge
        Over a limit (the server answers 413).
    SubmissionError
        Anything else wrong, naming the pair and field at fault.
    """
    limits = limits or ReadLimits()
    if max_decompressed is not None:
        limits = ReadLimits(max_decompressed, limits.max_side, limits.max_pairs)
    with _Source(src, source, limits) as opened:
        name, fh = opened.name, opened.fh
        try:
            head = fh.read(4)
            fh.seek(0)
        except OSError as exc:
            raise SubmissionError(f"cannot read ({exc.strerror or exc})", source=name) from None
        if not head:
            raise SubmissionError("empty submission", source=name)
        if head.startswith(b"PK"):
            sub = read_npz(fh, name, limits)
        elif head.startswith(GZIP_MAGIC):
            if opened.size is not None and opened.size > limits.max_bytes:
                raise SubmissionTooLarge(f"file of {mb(opened.size)} is over the limit of {mb(limits.max_bytes)}",
                                         source=name)
            gz = gzip.GzipFile(fileobj=fh, mode="rb")
            try:
                inner = gz.peek(4)[:4]
            except EOFError:
                raise SubmissionError("gzip data is truncated (the stream ends before the end of the gzip member)",
                                      source=name) from None
            except (zlib.error, OSError) as exc:
                raise SubmissionError(f"gzip data is corrupt ({one_line(exc)})", source=name) from None
            if inner.lstrip()[:1] not in _JSON_FIRST and not inner.startswith((GZIP_MAGIC, b"PK")):
                raise SubmissionError("gzip data that is not JSON (unrecognised bytes)", source=name)
            if inner.startswith(GZIP_MAGIC) or inner.startswith(b"PK"):
                what = "gzip data" if inner.startswith(GZIP_MAGIC) else "an NPZ"
                raise SubmissionError(f"gzip data holds {what}; compress JSON once, and store NPZ as it is "
                                      "(np.savez_compressed compresses inside)", source=name)
            sub = JsonReader(CappedStream(gz, limits.max_bytes, "gzip data", name), name, limits).read()
        else:
            first = head.lstrip()[:1]
            if first and first not in _JSON_FIRST:
                raise SubmissionError("not JSON, gzip JSON or NPZ (unrecognised bytes)", source=name)
            if opened.size is not None and opened.size > limits.max_bytes:
                raise SubmissionTooLarge(f"JSON text of {mb(opened.size)} is over the limit of "
                                         f"{mb(limits.max_bytes)}", source=name)
            sub = JsonReader(CappedStream(fh, limits.max_bytes, "JSON text", name), name, limits).read()
    check_values(sub, name)
    return sub


def save_submission(sub: Submission, path, *, compress: bool = False) -> Path:
    """Write a submission; ``.npz`` -> NPZ, ``.json`` -> JSON, ``.json.gz`` -> gzip JSON.

    NPZ is stored uncompressed by default: scoring a full-size NPZ is then mostly a memory copy.
    The optional ``confidence`` arrays are written as ``*_confidence`` (NPZ arrays / JSON pair keys).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_values(sub, str(path))
    name = path.name.lower()
    if name.endswith(".npz"):
        save = np.savez_compressed if compress else np.savez
        extra = ({CONFIDENCE_FIELDS[d]: np.asarray(sub.confidence[d]) for d in DIRECTIONS}
                 if sub.confidence is not None else {})
        with open(path, "wb") as fh:
            save(fh, photo=np.array(sub.photo, dtype=str), sketch=np.array(sub.sketch, dtype=str),
                 sketch_to_photo=np.ascontiguousarray(sub.sketch_to_photo),
                 photo_to_sketch=np.ascontiguousarray(sub.photo_to_sketch),
                 method=np.array(sub.method), kind=np.array(sub.kind), **extra)
    elif name.endswith(".json") or name.endswith(".json.gz"):
        text = json.dumps(sub.to_json_dict(), separators=(",", ":")).encode()
        if name.endswith(".gz"):
            text = gzip.compress(text, mtime=0)
        path.write_bytes(text)
    else:
        raise SubmissionError("unknown extension; use .npz, .json or .json.gz", source=str(path))
    return path
