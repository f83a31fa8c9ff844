"""Errors a user can act on. Their message is printed as is (no traceback) by the CLI and
returned as the ``detail`` of a 4xx by the servers, so it must name the file, row, field or pair
at fault and say what was expected."""

from __future__ import annotations


class Psc6kError(Exception):
    """Base class of every error caused by user input or environment, never by a bug."""


class FormatError(Psc6kError, ValueError):
    """A file on disk does not follow its documented format.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    file, row, column : optional
        Where. ``row`` is the 1-based line number in the file (the header is line 1).
    """

    def __init__(self, message: str, *, file=None, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"line {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message)


class SubmissionError(Psc6kError, ValueError):
    """A submission is malformed or does not match the annotations it is scored against.

    ``pair`` is ``(photo, sketch)`` when one pair is at fault, ``field`` the field name.
    """

    def __init__(self, message: str, *, pair: tuple[str, str] | None = None, field: str | None = None,
                 source=None):
        self.pair, self.field, self.source, self.reason = pair, field, source, message
        where = []
        if source is not None:
            where.append(str(source))
        if pair is not None:
            where.append(f"pair (photo={pair[0]!r}, sketch={pair[1]!r})")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message)
