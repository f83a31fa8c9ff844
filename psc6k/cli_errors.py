"""What ``psc6k`` prints when a command fails: one line, never a traceback.

:func:`describe` turns an exception raised by a command into that line when it is a user
mistake or a missing optional dependency (exit status 2), and returns None for anything else —
a bug, reported as one line too (exit status 1), with ``PSC6K_DEBUG=1`` giving the traceback.
"""

from __future__ import annotations

from psc6k.errors import Psc6kError

#: Top-level packages of the ``model`` extra: a command needing one of them gets the install hint.
MODEL_EXTRA_PACKAGES = ("torch", "kornia", "timm", "torchvision")
MODEL_EXTRA_HINT = "pip install 'psc6k[model]'"
#: Longest message printed; longer ones are cut with a count of what was left out.
MAX_MESSAGE_CHARS = 400
#: Import name -> how to install it.
INSTALL_HINTS = {**{name: MODEL_EXTRA_HINT for name in MODEL_EXTRA_PACKAGES},
                 "psycopg": "pip install 'psc6k[postgres]'", "psycopg2": "pip install 'psc6k[postgres]'"}
#: Exceptions raised by these libraries on bad input are reported by their first line.
_LIBRARIES = ("sqlalchemy", "pandas", "PIL", "cv2", "pydantic", "tomllib", "tomli", "json", "csv", "zipfile",
              "gzip", "zlib", "ijson", "numpy", "urllib", "sqlite3", "psycopg")


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters (plus a count of what was cut)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


def missing_dependency(exc: ModuleNotFoundError) -> str:
    missing = (exc.name or "a dependency").split(".")[0]
    hint = INSTALL_HINTS.get(missing, f"pip install {missing}")
    return f"needs the Python package {missing!r}, which is not installed. Install it with: {hint}"


def describe(exc: BaseException) -> str | None:
    """The one-line message for a user mistake, or None when ``exc`` looks like a bug."""
    import json

    if isinstance(exc, Psc6kError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return missing_dependency(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: the input is too large for this machine (or a limit is set too high)"
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):  # any command's psc6k.parallel pool; build-keypoints says more
        return ("a worker process died abruptly (killed by a signal or the out-of-memory killer); "
                "run again with fewer --workers or more memory")
    if isinstance(exc, OSError) and (exc.filename is not None or exc.strerror):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    module = type(exc).__module__ or ""
    if module.split(".")[0] in _LIBRARIES:
        first = str(exc).strip().splitlines()
        return f"{first[0] if first else type(exc).__name__}"
    return None
