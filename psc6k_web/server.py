"""The one server runner of both web services: uvicorn (httptools + uvloop) bounded before the app runs.

With no reverse proxy in front, the HTTP server itself must bound what a client can make it read
and hold. Plain uvicorn does not: httptools (llhttp) has no limit on a request line or header, so
one connection sending a never-ending header grows the server by its size and stalls every other
request while the parser copies it; and no timer runs until the first request's headers have
arrived, so a half-sent header holds its connection (and file descriptor) forever.
``BoundedHttpToolsProtocol`` adds, per connection:

- the request line + headers ("head") may take at most ``max_head_bytes``: the parser is fed no
  byte beyond, the client gets 431 and the connection is closed; nothing past the limit is read
  (a head pipelined in the same read as the previous request's body: at most one read more);
- the head must arrive within ``head_timeout_s`` of the connection opening (or, on a kept-alive
  connection, of the request's first byte); else 408 and close (slowloris);
- at most ``max_connections`` open connections per worker process, and ``max_connections_per_client``
  from one client address: a connection beyond is answered 503 and closed at once, before anything
  of it is read; the connections already open are not touched;
- an idle kept-alive connection is closed after ``keep_alive_s``.

``proxy_headers`` is always off: uvicorn's default trusts ``X-Forwarded-For`` from 127.0.0.1, which
lets any local client choose its address. ``psc6k_web.ratelimit.client_address`` is the only place
that reads such a header, and only from a configured proxy.

The listening socket is made with ``IPPROTO_TCP``: uvicorn (0.54/0.55) creates its multi-worker
socket with ``proto=0``; asyncio then does not set TCP_NODELAY on accepted connections (it checks
``proto == IPPROTO_TCP``), and each response, written in two segments, waits about 40 ms for the
client's delayed ACK: every click took 40+ ms with 2 workers against 2 ms with one.

The choice of uvicorn + this protocol over uvicorn's h11 limits, Hypercorn and Granian is measured in
``benchmarks/bench_server.py``; the table is in docs/server.md ("With no proxy in front").
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections import Counter
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from psc6k.errors import Psc6kError

from .limits import ServerLimits


def _reply(status_line: bytes, reason: str) -> bytes:
    body = reason.encode("ascii") + b"\n"
    return (status_line + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)


HEAD_TOO_LARGE = _reply(b"HTTP/1.1 431 Request Header Fields Too Large", "request line and headers too large")
HEAD_TIMEOUT = _reply(b"HTTP/1.1 408 Request Timeout", "request headers took too long")
TOO_MANY = _reply(b"HTTP/1.1 503 Service Unavailable", "too many open connections; retry later")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of ``ServerLimits`` (``config.limits``)."""

    def __init__(self, config: BoundedConfig, server_state, app_state: dict[str, Any], _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServerLimits = config.limits
        # per worker: open connections per client address (server_state is shared by the worker's connections)
        if not hasattr(server_state, "psc6k_per_client"):
            server_state.psc6k_per_client = Counter()
        self.per_client: Counter = server_state.psc6k_per_client
        self.admitted = False
        self.head_open = True       # waiting for (the rest of) a request line + headers
        self.head_bytes = 0         # bytes fed to the parser since this head began
        self.head_timer: asyncio.TimerHandle | None = None

    # -- connection admission -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        host = (transport.get_extra_info("peername") or ("?",))[0]
        if (len(self.connections) >= self.limits.max_connections
                or self.per_client[host] >= self.limits.max_connections_per_client):
            # refused before anything is read; never joins self.connections
            self.transport = transport
            transport.write(TOO_MANY)
            transport.close()
            return
        self.admitted, self.host = True, host
        self.per_client[host] += 1
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.admitted:
            self.admitted = False
            self.per_client[self.host] -= 1
            if not self.per_client[self.host]:
                del self.per_client[self.host]
            super().connection_lost(exc)

    # -- head size ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self.admitted or self.transport.is_closing():
            return
        # Bytes fed while a head is open count against it. A head that begins inside a chunk fed
        # as body (a pipelined request) is counted from the next read on: at most one read
        # (<= 256 KiB) more than the limit, still bounded whatever the client sends.
        if self.head_open:
            room = self.limits.max_head_bytes - self.head_bytes
            if len(data) > room:  # feed up to the limit; the head must end within it
                head, rest = data[:room], data[room:]
                self.head_bytes += len(head)
                super().data_received(head)
                if self.transport.is_closing():
                    return
                if self.head_open:
                    self._close_with(HEAD_TOO_LARGE)
                    return
                self.data_received(rest)
                return
            self.head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open = True
        if self.head_timer is None:  # a kept-alive connection: the clock starts at the request's first byte
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self.head_open = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_open, self.head_bytes = True, 0

    # -- head time ------------------------------------------------------------------------------
    def _start_head_timer(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.head_open and not self.transport.is_closing():
            self._close_with(HEAD_TIMEOUT)

    def _close_with(self, reply: bytes) -> None:
        """Answer ``reply`` unless a response of this connection is under way, then close."""
        self._cancel_head_timer()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(reply)
        self.transport.close()


class BoundedConfig(uvicorn.Config):
    """uvicorn's config with ``limits``, the bounded protocol, no proxy headers, and a TCP socket."""

    def __init__(self, app, *, limits: ServerLimits, **kwargs) -> None:
        super().__init__(app, http=BoundedHttpToolsProtocol, proxy_headers=False, limit_concurrency=None,
                         timeout_keep_alive=limits.keep_alive_s, **kwargs)
        self.limits = limits

    def bind_socket(self) -> socket.socket:
        family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise Psc6kError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        sock.set_inheritable(True)
        return sock


FD_MARGIN = 256  # descriptors besides client connections: database, files, logs, the pipe to the supervisor


def _make_room_for(connections: int) -> None:
    """Raise this process's open-file limit (soft, up to the hard limit) so that ``connections``
    client sockets fit: beyond it ``accept`` fails and asyncio stops accepting for a second."""
    want = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < want:
        logging.getLogger("uvicorn.error").warning(
            "open-file limit %d leaves room for %d connections, fewer than max_connections=%d; "
            "raise 'ulimit -n' or lower max_connections", soft, soft - FD_MARGIN, connections)


def make_server(app, *, host: str, port: int, limits: ServerLimits, log_level: str = "info",
                factory: bool = False, workers: int = 1) -> tuple[uvicorn.Server, socket.socket]:
    """One bounded uvicorn server and its bound socket (``port`` 0: an ephemeral port); run it
    with ``server.run(sockets=[sock])`` (tests run it in a thread and set ``server.should_exit``)."""
    config = BoundedConfig(app, limits=limits, host=host, port=port, log_level=log_level, factory=factory,
                           workers=workers)
    return uvicorn.Server(config), config.bind_socket()


def serve(app, *, host: str, port: int, limits: ServerLimits | None = None, workers: int = 1,
          log_level: str = "info", factory: bool = False) -> None:
    """Serve ``app`` until interrupted.

    Parameters
    ----------
    app : ASGI app, ``"module:attr"`` import string, or picklable factory (``factory=True``)
        With ``workers > 1``, an import string or a factory: each worker process builds its own app.
    host, port : where to listen.
    limits : ServerLimits, optional
        What the server bounds per worker (default: ``ServerLimits()``).
    workers : int
        Worker processes sharing one listening socket.
    """
    limits = limits or ServerLimits()
    _make_room_for(limits.max_connections)
    server, sock = make_server(app, host=host, port=port, limits=limits, log_level=log_level, factory=factory,
                               workers=workers)
    try:
        if workers <= 1:
            server.run(sockets=[sock])
        else:
            Multiprocess(server.config, sockets=[sock]).run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        sock.close()

