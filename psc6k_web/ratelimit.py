"""Per-client rate limits (the ``limits`` library) keyed on the client's address, which is the
TCP peer unless a trusted reverse proxy's header is configured."""

from __future__ import annotations

import math
import time

from starlette.requests import Request

from psc6k.errors import RateLimitedError


def client_address(request: Request, trusted_proxy_header: str | None = None) -> str:
    """The client of ``request``: the last entry of ``trusted_proxy_header`` when configured and
    present (the address the proxy itself appended; earlier entries are the client's own claims),
    else the TCP peer."""
    if trusted_proxy_header:
        value = request.headers.get(trusted_proxy_header, "")
        last = value.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.client.host if request.client else "unknown"


class RateLimit:
    """``limit`` (e.g. ``"20/minute"``, ``"5/second;100/hour"``) per client address, counted in
    ``storage`` (``memory://`` per process, or a shared ``redis://`` URI)."""

    def __init__(self, limit: str, *, name: str, storage: str = "memory://", trusted_proxy_header: str | None = None):
        from limits import parse_many
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.items = parse_many(limit)
        self.limit, self.name, self.header = limit, name, trusted_proxy_header
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage))

    def hit(self, request: Request) -> None:
        """Count one request of this client; raises RateLimitedError (429) past the limit."""
        key = client_address(request, self.header)
        for item in self.items:
            if not self.limiter.hit(item, self.name, key):
                reset = self.limiter.get_window_stats(item, self.name, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise RateLimitedError(f"too many requests from your address ({self.limit} for {self.name}); "
                                       f"retry in {wait} s", retry_after=wait)
