"""Opening a file the user named, without trusting it: one place for the checks every reader needs.

A path can be missing, a directory, a FIFO (opening it would block), unreadable, empty, binary or
a 5 GB (possibly sparse) file; each is one :class:`~psc6k.errors.FormatError` naming the file,
raised before more than a few KB are read — never a traceback, never the whole file in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from psc6k.errors import FormatError

#: Default cap on a text input (CSV, JSON, TOML). The full PSC6K CSVs are a few MB.
MAX_TEXT_BYTES = 1024**3
_SNIFF_BYTES = 1 << 16


def _size_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_input_file(path, *, what: str = "file", max_bytes: int | None = MAX_TEXT_BYTES,
                     text: bool = True) -> Path:
    """Refuse a path that is not a readable regular file within ``max_bytes``.

    Parameters
    ----------
    path : path-like
    what : str
        What the file should be, for the message ("a CSV file", "a TOML file", ...).
    max_bytes : int or None
        Largest size accepted (None: no cap).
    text : bool
        Also refuse binary data (NUL bytes in the first 64 KB), e.g. an image or a sparse file.

    Returns
    -------
    Path

    Raises
    ------
    FormatError
    """
    path = Path(path)
    try:
        st = os.stat(path)  # before open(): opening a FIFO would block
    except FileNotFoundError:
        raise FormatError("file not found", file=path) from None
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror or exc})", file=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(f"is a directory; expected {what}", file=path)
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"is not a regular file (a FIFO, socket or device?); expected {what}", file=path)
    if max_bytes is not None and st.st_size > max_bytes:
        raise FormatError(f"file of {_size_text(st.st_size)} is over the limit of {_size_text(max_bytes)} for "
                          f"{what}", file=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES) if text else b""
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror or exc})", file=path) from None
    if text and b"\0" in head:
        raise FormatError(f"not a text file (binary data); expected {what}", file=path)
    return path


def read_text(path, *, what: str = "a text file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a checked input file (a BOM is dropped)."""
    path = check_input_file(path, what=what, max_bytes=max_bytes)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise FormatError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start}); expected {what}",
                          file=path) from None
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror or exc})", file=path) from None


def file_sha256(path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror or exc})", file=path) from None
    return digest.hexdigest()
