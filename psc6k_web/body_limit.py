"""A cap on request bodies, for both web services (pure ASGI: it sees the byte stream)."""

from __future__ import annotations

from psc6k.errors import BadRequestError, TooLargeError

from .errors import psc6k_error_response

#: Bodies of JSON routes are small; a route that takes big uploads is exempted and caps its own.
SMALL_BODY_LIMIT = 64 * 1024


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (``code: too_large``).

    A declared ``Content-Length`` over the limit is answered before reading anything; a body
    without one (chunked) is counted as it streams in and refused as soon as it passes the
    limit, so it never sits in memory beyond it: ``receive`` raises :class:`TooLargeError`, and
    whatever the app makes of that (a framework may wrap it in its own 400), the reply is this
    413 as long as the app has not started answering.
    """

    def __init__(self, app, limit: int = SMALL_BODY_LIMIT, exempt_paths=()):
        self.app, self.limit, self.exempt = app, int(limit), frozenset(exempt_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        limit = self.limit
        over = TooLargeError(f"request body over the limit of {limit} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await psc6k_error_response(BadRequestError("bad Content-Length header"))(
                        scope, receive, send)
                if declared > limit:
                    return await psc6k_error_response(over)(scope, receive, send)
                return await self.app(scope, receive, send)  # the server enforces the declared length
        seen, refused, started = 0, False, False

        async def limited_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    raise over
            return message

        async def guarded_send(message):
            nonlocal started
            if refused and not started:
                return  # the app's reply to a body it could not read: the 413 below goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except TooLargeError:
            if not refused or started:
                raise
        if refused and not started:
            await psc6k_error_response(over)(scope, receive, send)
