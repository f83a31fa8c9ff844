"""What ``psc6k`` prints when a command fails: one line, never a traceback.

:func:`describe` turns an exception raised by a command into that line when it is a user
mistake or a missing optional dependency (exit status 2), and returns None for anything else —
a bug, reported as one line too (exit status 1), with ``PSC6K_DEBUG=1`` giving the traceback.

Library code names parameters (`` `dense_gt` ``), commands name options (``--dense-gt``):
:func:`command_message` is the one place that rewrites the first into the second, from the
command's own argument parser (an option's ``dest`` is the library parameter it feeds).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures.process import BrokenProcessPool

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
              "gzip", "zlib", "msgspec", "numpy", "urllib", "sqlite3", "psycopg")


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


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """How a command spells each of its parameters: ``dest`` -> option as the user types it.

    An optional argument is shown by its first long option (``--dense-gt``, else its short one),
    a positional one as its usage line shows it (metavar, else dest). Sub-command parsers
    (``annotate init``, ``serve token create``) are included; the outer parser wins a clash.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("clicks"); _ = p.add_argument("-o", "--out")
    >>> _ = p.add_argument("--pairs", dest="max_pairs", type=int)
    >>> option_names(p)["max_pairs"], option_names(p)["out"], option_names(p)["clicks"]
    ('--pairs', '--out', 'clicks')
    """
    names: dict[str, str] = {}
    nested = []
    for action in parser._actions:  # argparse has no public accessor for the defined arguments
        if isinstance(action, argparse._SubParsersAction):
            nested += list(action.choices.values())
        elif isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        elif action.dest != argparse.SUPPRESS and action.help != argparse.SUPPRESS:
            longs = [o for o in action.option_strings if o.startswith("--")]
            spelled = (longs or action.option_strings or [None])[0]
            if spelled is None:
                spelled = action.metavar if isinstance(action.metavar, str) else action.dest
            names.setdefault(action.dest, spelled)
    for sub in nested:
        for dest, spelled in option_names(sub).items():
            names.setdefault(dest, spelled)
    return names


def name_options(text: str, names: dict[str, str], params=None) -> str:
    """``text`` with each parameter written `` `name` `` replaced by its option in ``names``
    (:func:`option_names`): those of ``params``, or every one of ``names`` when None.

    Examples
    --------
    >>> name_options("raise `max_dilations`", {"max_dilations": "--max-dilations"})
    'raise --max-dilations'
    """
    for param in names if params is None else params:
        if param in names:
            text = text.replace(f"`{param}`", names[param])
    return text


def command_message(exc: Psc6kError, parser: argparse.ArgumentParser | None) -> str:
    """``str(exc)`` with each parameter it names (``exc.params``, written `` `name` ``) replaced
    by the command's option for it (``--name``); a parameter the command has no option for
    keeps its backticked name.

    Examples
    --------
    >>> from psc6k.errors import ParameterError
    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--dense-gt")
    >>> command_message(ParameterError("`dense_gt`: not a flow file", param="dense_gt"), p)
    '--dense-gt: not a flow file'
    """
    if parser is None or not exc.params:
        return str(exc)
    return name_options(str(exc), option_names(parser), exc.params)


def describe(exc: BaseException, parser: argparse.ArgumentParser | None = None) -> str | None:
    """The one-line message for a user mistake, or None when ``exc`` looks like a bug.

    ``parser`` is the failing command's: the parameters a :class:`Psc6kError` names become its
    options (:func:`command_message`).
    """
    if isinstance(exc, Psc6kError):
        return command_message(exc, parser)
    if isinstance(exc, ModuleNotFoundError):
        return missing_dependency(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: the input is too large for this machine (or a limit is set too high)"
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
