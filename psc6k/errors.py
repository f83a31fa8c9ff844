"""Errors a user can act on. Their message is printed as is (no traceback) by the CLI and
returned as the ``detail`` of a 4xx by the servers, so it must name the file, row, field or pair
at fault and say what was expected."""

from __future__ import annotations


class Psc6kError(Exception):
    """Base class of every error caused by user input or environment, never by a bug.

    Library code names the *parameters* at fault, never a command's options: the message writes
    each one in backticks (`` `max_pairs` must be >= 1``) and ``param`` lists them, so that a
    Python caller reads the keyword argument it passed, and a command shows its own option
    instead (``--pairs must be >= 1``; :func:`psc6k.cli_errors.command_message`).

    Parameters
    ----------
    *args
        The message (and anything :class:`Exception` takes).
    param : str or sequence of str, optional
        The parameter(s) the message names in backticks; kept as the tuple ``params``.
    """

    params: tuple[str, ...] = ()

    def __init__(self, *args, param: str | tuple[str, ...] | list[str] | None = None):
        super().__init__(*args)
        if param is not None:
            self.params = (param,) if isinstance(param, str) else tuple(param)


class ParameterError(Psc6kError, ValueError):
    """A parameter of a library function (a command's option) is missing or has a bad value.

    Examples
    --------
    >>> exc = ParameterError("`max_pairs` must be >= 1, got 0", param="max_pairs")
    >>> exc.params
    ('max_pairs',)
    """


class FormatError(Psc6kError, ValueError):
    """A file on disk does not follow its documented format.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    file, row, column : optional
        Where. ``row`` is the 1-based line number in the file (the header is line 1).
    """

    def __init__(self, message: str, *, file=None, row: int | None = None, column: str | None = None,
                 param: str | tuple[str, ...] | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"line {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message, param=param)


class SubmissionError(Psc6kError, ValueError):
    """A submission is malformed or does not match the annotations it is scored against.

    ``pair`` is ``(photo, sketch)`` when one pair is at fault, ``field`` the field name, ``param``
    the parameter(s) the message names in backticks (:class:`Psc6kError`).
    """

    def __init__(self, message: str, *, pair: tuple[str, str] | None = None, field: str | None = None,
                 source=None, param: str | tuple[str, ...] | None = None):
        self.pair, self.field, self.source, self.reason = pair, field, source, message
        where = []
        if source is not None:
            where.append(str(source))
        if pair is not None:
            where.append(f"pair (photo={pair[0]!r}, sketch={pair[1]!r})")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message, param=param)


# ------------------------------------------------------------------------------ request errors
# Errors of a request to one of the web services. They live in core (no web import here) so that
# service code of every part raises them and the ONE table below decides what a client sees;
# the web layer applies the table to each FastAPI app (docs/errors.md).

class RequestError(Psc6kError):
    """A :class:`Psc6kError` with extra JSON fields for the HTTP error body.

    Parameters
    ----------
    message : str
        The ``detail`` of the reply: what is wrong, naming the field, and what to do.
    **fields
        Extra members of the error body (for example ``field="trial_id"``, ``missing=3``).
    """

    def __init__(self, message: str, /, **fields):
        super().__init__(message)
        self.fields = fields


class BadRequestError(RequestError):
    """The request cannot be read as HTTP says it should (a bad header, a broken body)."""


class AuthenticationError(RequestError):
    """No credentials, or credentials this server does not know (``WWW-Authenticate: Bearer``)."""


class PermissionDeniedError(RequestError):
    """Credentials are known but not allowed here, or the feature is switched off."""


class NotFoundError(RequestError):
    """The request names something that does not exist (for this caller)."""


class ConflictError(RequestError):
    """The request contradicts the stored state (already answered, study full, ...)."""


class GoneError(RequestError):
    """What the request needs existed but lapsed (an expired reservation)."""


class RequestTimeoutError(RequestError):
    """The request took longer to arrive than its clock allows."""


class TooLargeError(RequestError):
    """A body or a decompressed payload is over its limit. The one "too large" class: it wins
    over any other class an exception also has (a too-large submission is 413, not 422)."""


class UnsupportedMediaTypeError(RequestError):
    """A Content-Type or Content-Encoding the route does not take."""


class RateLimitedError(RequestError):
    """Too many requests from this client; ``retry_after`` seconds until the next may pass."""

    def __init__(self, message: str, /, retry_after: int = 60, **fields):
        super().__init__(message, **fields)
        self.retry_after = int(retry_after)


class UnavailableError(RequestError):
    """The service cannot answer now (a dependency is down, too busy); retry in ``retry_after`` s."""

    def __init__(self, message: str, /, retry_after: int = 5, **fields):
        super().__init__(message, **fields)
        self.retry_after = int(retry_after)


#: The error contract of both web services: exception class -> (HTTP status, ``code``).
#: The most specific class of an exception's MRO listed here wins. Documented in docs/errors.md.
HTTP_ERRORS: dict[type, tuple[int, str]] = {
    BadRequestError: (400, "bad_request"),
    AuthenticationError: (401, "unauthorized"),
    PermissionDeniedError: (403, "forbidden"),
    NotFoundError: (404, "not_found"),
    ConflictError: (409, "conflict"),
    RequestTimeoutError: (408, "timeout"),
    GoneError: (410, "gone"),
    TooLargeError: (413, "too_large"),
    UnsupportedMediaTypeError: (415, "unsupported_media_type"),
    RateLimitedError: (429, "rate_limited"),
    UnavailableError: (503, "unavailable"),
    SubmissionError: (422, "invalid_submission"),
    FormatError: (422, "invalid_format"),
    Psc6kError: (422, "invalid_input"),
}

#: ``code`` of an error that carries only an HTTP status (a framework's or a route's
#: ``HTTPException``): the same code as the exception class with that status.
HTTP_STATUS_CODES: dict[int, str] = {
    **{status: code for status, code in HTTP_ERRORS.values() if status != 422},
    405: "method_not_allowed", 422: "invalid_request", 431: "headers_too_large", 500: "internal_error",
}


def http_error(exc: BaseException) -> tuple[int, str]:
    """``(status, code)`` of ``exc`` by :data:`HTTP_ERRORS`; ``(500, "internal_error")`` for
    anything that is not a :class:`Psc6kError` (a bug).

    Examples
    --------
    >>> http_error(ConflictError("trial 3 is already answered"))
    (409, 'conflict')
    >>> http_error(FormatError("bad header", file="a.csv"))
    (422, 'invalid_format')
    >>> http_error(KeyError("x"))
    (500, 'internal_error')
    """
    if isinstance(exc, TooLargeError):  # whatever else it is, it was refused for its size
        return HTTP_ERRORS[TooLargeError]
    for cls in type(exc).__mro__:
        if cls in HTTP_ERRORS:
            return HTTP_ERRORS[cls]
    return 500, "internal_error"


#: Attributes of :class:`FormatError` / :class:`SubmissionError` an error body carries (never
#: ``file`` / ``source``: a path on the server).
LOCATION_FIELDS = ("field", "row", "column")


def error_fields(exc: BaseException) -> dict:
    """The extra JSON fields of ``exc``'s error body: a :class:`RequestError`'s ``fields``, plus
    the ``field`` / ``row`` / ``column`` a format or submission error names."""
    fields = {name: getattr(exc, name) for name in LOCATION_FIELDS if getattr(exc, name, None) is not None}
    return {**fields, **(getattr(exc, "fields", None) or {})}
