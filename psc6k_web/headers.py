"""Headers every reply of both apps carries, and ``HEAD`` on every ``GET`` route (pure ASGI).

* ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` on every reply;
* a Content-Security-Policy on every reply: scripts, styles, fonts and frames only from the
  server itself, no inline script or style, images also from ``blob:`` / ``data:`` (the dashboard
  shows images it fetched with the admin header as blob URLs), and ``frame-ancestors 'none'``
  (plus ``X-Frame-Options: DENY`` for older browsers): no other site can frame a page;
* ``Cache-Control: no-store`` on the paths an app names (admin and participant APIs: their
  replies carry Prolific ids, tokens, quotas), replacing whatever the route set.

FastAPI's ``/docs`` page loads Swagger UI from a CDN with an inline script: it gets a policy that
allows exactly that, and still no framing.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders

#: The policy of every page and reply of both apps (their HTML has no inline script or style).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
#: The interactive API docs (FastAPI's Swagger UI / ReDoc from jsdelivr, started by an inline script).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
            "https://fastapi.tiangolo.com https://cdn.redoc.ly; worker-src blob:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")

COMMON = (("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"),
          ("x-frame-options", "DENY"))
#: The headers of a reply sent from outside the middleware stack: Starlette sends the reply to an
#: unhandled exception (a 500) from its outermost middleware, which :class:`SecurityHeaders`
#: never sees, so that reply carries them itself (and is never cached).
BUG_REPLY_HEADERS = {**dict(COMMON), "content-security-policy": CSP, "cache-control": "no-store"}


class SecurityHeaders:
    """Add the headers above to every reply; ``no_store`` is a tuple of path prefixes."""

    def __init__(self, app, no_store: tuple[str, ...] = ()):
        self.app, self.no_store = app, tuple(no_store)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        csp = DOCS_CSP if path in DOCS_PATHS or path.startswith("/docs/") else CSP
        no_store = path.startswith(self.no_store) if self.no_store else False

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in COMMON:
                    headers[name] = value
                headers["content-security-policy"] = csp
                if no_store:
                    headers["cache-control"] = "no-store"
            await send(message)

        return await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """Answer ``HEAD`` like ``GET`` without the body (routes are declared for GET only)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_without_body(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        return await self.app({**scope, "method": "GET"}, receive, send_without_body)
