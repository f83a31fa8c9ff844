"""A cap on request bodies, for both web services (pure ASGI: it sees the byte stream)."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from psc6k.errors import HTTP_STATUS_CODES

from .errors import error_response

#: Bodies of JSON routes are small; a route that takes big uploads is exempted and caps its own.
SMALL_BODY_LIMIT = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit (a 413 reply)."""

    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (``code: too_large``).

    A declared ``Content-Length`` over the limit is answered before reading anything; a body
    without one (chunked) is counted as it streams in and refused as soon as it passes the
    limit, so it never sits in memory beyond it. Paths in ``exempt_paths`` pass untouched.
    """

    def __init__(self, app, limit: int = SMALL_BODY_LIMIT, exempt_paths=()):
        self.app, self.limit, self.exempt = app, int(limit), frozenset(exempt_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        limit = self.limit
        over = f"request body over the limit of {limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await error_response(400, HTTP_STATUS_CODES[400], "bad Content-Length header")(
                        scope, receive, send)
                if declared > limit:
                    return await error_response(413, HTTP_STATUS_CODES[413], over)(scope, receive, send)
                return await self.app(scope, receive, send)  # the server enforces the declared length
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(over)
            return message

        return await self.app(scope, limited_receive, send)
