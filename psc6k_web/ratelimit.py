"""Client addresses and per-client rate limits (the ``limits`` library).

:func:`client_address` is the only place of both apps that reads a proxy header: the client is
the TCP peer, unless that peer is a configured trusted proxy (``trusted_proxies`` of the app's
settings), in which case it is the rightmost ``X-Forwarded-For`` entry that is not itself a
trusted proxy (entries to its left are whatever the client chose to send). With no trusted
proxy configured (the default) a client cannot choose its own key.
"""

from __future__ import annotations

import ipaddress
import math
import time

from starlette.requests import Request

from psc6k.errors import RateLimitedError

from .settings import Network, check_rate_limit


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def forwarded_client(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client address of a request from TCP peer ``peer`` with ``X-Forwarded-For`` header
    values ``forwarded_for``, given the ``trusted`` proxy networks.

    Examples
    --------
    >>> net = (ipaddress.ip_network("10.0.0.0/8"),)
    >>> forwarded_client("127.0.0.1", ["6.6.6.6"], net)       # the peer is no proxy: header ignored
    '127.0.0.1'
    >>> forwarded_client("10.0.0.2", ["6.6.6.6, 1.2.3.4, 10.0.0.9"], net)  # rightmost untrusted hop
    '1.2.3.4'
    >>> forwarded_client("10.0.0.2", [], net)
    '10.0.0.2'
    """
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop or _is_trusted(hop, trusted):
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:  # a trusted proxy passed on something that is no address: do not key on it
            return peer
    return peer


def client_address(request: Request) -> str:
    """The client of ``request`` under its app's ``settings.trusted_proxies`` (see the module)."""
    peer = request.client.host if request.client else "unknown"
    settings = getattr(request.app.state, "settings", None)
    trusted = settings.proxy_networks() if settings is not None else ()
    if not trusted:
        return peer
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)


class RateLimit:
    """``limit`` (e.g. ``"20/minute"``, ``"5/second;100/hour"``) per client address, counted in
    ``storage`` (``memory://`` per process, or a shared ``redis://`` URI)."""

    def __init__(self, limit: str, *, name: str, storage: str = "memory://"):
        from limits import parse_many
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        check_rate_limit(limit)
        self.items = parse_many(limit)
        self.limit, self.name = limit, name
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage))

    def _refusal(self, item, key: str) -> RateLimitedError:
        reset = self.limiter.get_window_stats(item, self.name, key).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        return RateLimitedError(f"too many requests from your address ({self.limit} for {self.name}); "
                                f"retry in {wait} s", retry_after=wait)

    def hit_key(self, key: str) -> None:
        """Count one event of ``key``; raises RateLimitedError (429) past the limit."""
        for item in self.items:
            if not self.limiter.hit(item, self.name, key):
                raise self._refusal(item, key)

    def check_key(self, key: str) -> None:
        """Raise RateLimitedError when ``key`` is already at the limit (counts nothing)."""
        for item in self.items:
            if not self.limiter.test(item, self.name, key):
                raise self._refusal(item, key)

    def hit(self, request: Request) -> None:
        """Count one request of this client; raises RateLimitedError (429) past the limit."""
        self.hit_key(client_address(request))
