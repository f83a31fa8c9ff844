"""The error contract of both web services, applied to a FastAPI app.

Every error reply is JSON ``{"detail": str, "code": str, ...}``: ``detail`` a message naming the
field and saying what to do, ``code`` a stable machine-readable name, plus the exception's own
fields (``field``, ``reason``, ``missing``, ...). Statuses and codes come from the one table
:data:`psc6k.errors.HTTP_ERRORS`; docs/errors.md is its description.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from psc6k.errors import (HTTP_ERRORS, HTTP_STATUS_CODES, AuthenticationError, Psc6kError, RateLimitedError, UnavailableError,
                          error_fields, http_error)

from .headers import BUG_REPLY_HEADERS
from .responses import SafeJSONResponse

log = logging.getLogger("psc6k.web")

#: At most this many validation problems are spelled out in ``detail`` (all are in ``errors``).
MAX_LISTED_PROBLEMS = 5


def error_response(status: int, code: str, detail: str, /, *, headers=None, **fields) -> SafeJSONResponse:
    """The one shape of an error reply."""
    return SafeJSONResponse({"detail": detail, "code": code, **fields}, status_code=status, headers=headers)


def field_of(loc) -> str:
    """``("body", "x")`` -> ``"x"``; ``("query", "task_id")`` -> ``"task_id"``; ``()`` -> ``"body"``."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_response(exc: RequestValidationError) -> SafeJSONResponse:
    errors = [{"field": field_of(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
    text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:MAX_LISTED_PROBLEMS]) or "invalid request"
    return error_response(422, HTTP_STATUS_CODES[422], f"invalid request: {text}", errors=errors)


def error_headers(exc: Psc6kError) -> dict | None:
    """The headers an error reply carries (built here only): ``Retry-After`` of a 429 / 503,
    ``WWW-Authenticate`` of a 401."""
    if isinstance(exc, (RateLimitedError, UnavailableError)):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    return None


def psc6k_error_response(exc: Psc6kError) -> SafeJSONResponse:
    status, code = http_error(exc)
    return error_response(status, code, str(exc), headers=error_headers(exc), **error_fields(exc))


def _db_reason(exc: SQLAlchemyError) -> str:
    """One line on what the database refused: the driver's first line, never the statement or
    its parameters (they can hold session tokens)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else type(exc).__name__).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0][:200] if text else ''}"


def install_error_handlers(app: FastAPI, *, unavailable_detail: str = "the database is unavailable; "
                           "retry later (nothing was stored)") -> None:
    """Map every exception a request can raise onto the contract.

    * :class:`psc6k.errors.Psc6kError` and subclasses: status and code from the table.
    * ``HTTPException`` (the framework's 404/405, a route's own): its status, the table's code
      for that status.
    * request validation: 422 ``invalid_request`` with ``errors: [{field, message}]``.
    * the database unreachable (``OperationalError``): 503 ``unavailable`` with ``Retry-After``.
    * a value the database refuses (``DataError``: a NUL in text on PostgreSQL, a number out of
      range): 422 ``invalid_input``; a constraint (``IntegrityError``): 409 ``conflict``. Both
      are logged as one line without the statement or its parameters, never a traceback.
    * ``MemoryError``: 413 ``too_large``.
    * anything else is a bug: 500 ``internal_error`` (logged, counted in
      ``app.state.internal_errors``).
    """
    app.state.internal_errors = 0

    @app.exception_handler(Psc6kError)
    async def _on_psc6k_error(request: Request, exc: Psc6kError):
        return psc6k_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException):
        code = HTTP_STATUS_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, exc: RequestValidationError):
        return validation_response(exc)

    @app.exception_handler(OperationalError)
    async def _on_database_down(request: Request, exc: OperationalError):
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, _db_reason(exc))
        return error_response(503, HTTP_STATUS_CODES[503], unavailable_detail, headers={"Retry-After": "30"})

    @app.exception_handler(DataError)
    async def _on_refused_value(request: Request, exc: DataError):
        log.warning("database refused a value of %s %s: %s", request.method, request.url.path, _db_reason(exc))
        return error_response(422, HTTP_ERRORS[Psc6kError][1], "a value of the request cannot be stored "
                              "(control characters, or a number out of range)")

    @app.exception_handler(IntegrityError)
    async def _on_constraint(request: Request, exc: IntegrityError):
        log.warning("database constraint on %s %s: %s", request.method, request.url.path, _db_reason(exc))
        return error_response(409, HTTP_STATUS_CODES[409], "the request conflicts with what is stored; "
                              "reload and retry")

    @app.exception_handler(MemoryError)
    async def _on_memory_error(request: Request, exc: MemoryError):
        return error_response(413, HTTP_STATUS_CODES[413], "request too large to process in memory")

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception):  # only true bugs land here
        app.state.internal_errors += 1
        if isinstance(exc, SQLAlchemyError):  # its text holds the statement's parameters: not logged
            log.error("internal database error on %s %s: %s", request.method, request.url.path, _db_reason(exc))
        else:
            log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, HTTP_STATUS_CODES[500], "internal server error (logged)",
                              headers=BUG_REPLY_HEADERS)


class ErrorBody(BaseModel):
    """Every error reply (OpenAPI ``responses``): ``detail``, ``code`` and the error's own fields."""

    model_config = ConfigDict(extra="allow")
    detail: str = Field(description="what is wrong, naming the field, and what to do")
    code: str = Field(description="stable name of the error (docs/errors.md)")


def error_responses(*statuses: int) -> dict:
    """``responses=`` of a route: each status documented with :class:`ErrorBody`."""
    return {s: {"model": ErrorBody} for s in statuses}
