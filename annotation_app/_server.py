"""uvicorn with several workers, on a listening socket made with ``IPPROTO_TCP``.

uvicorn (0.54) creates its multi-worker socket with ``proto=0``; asyncio then does not set
TCP_NODELAY on accepted connections (it checks ``proto == IPPROTO_TCP``), and each response,
written in two segments, waits about 40 ms for the client's delayed ACK: every click took
40+ ms with 2 workers against 2 ms with one. Binding the socket properly fixes it.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from psc6k.errors import Psc6kError


class TcpConfig(uvicorn.Config):
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


def run_workers(app, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve ``app`` (an import string or a picklable factory, called once in each worker)."""
    config = TcpConfig(app, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                       proxy_headers=False)  # client addresses: psc6k_web.ratelimit.client_address only
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
