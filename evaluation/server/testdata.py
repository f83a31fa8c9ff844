"""Running the scoring server in tests and benchmarks: a free port, a health wait, a server in
a thread. The synthetic annotations and submissions are the core's (:mod:`psc6k.testing`).
"""

from __future__ import annotations

__all__ = ["free_port", "serve_in_thread", "wait_until_healthy"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test server)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base_url: str, proc, timeout_s: float = 60.0) -> None:
    """Block until ``GET base_url/health`` answers 200; fail early if the server process died.

    ``proc`` is the ``subprocess.Popen`` of ``psc6k serve`` (its captured output is shown on failure).
    """
    import time

    import httpx

    deadline = time.time() + timeout_s
    while True:
        try:
            if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            out = proc.stdout or proc.stderr
            raise AssertionError("server exited: " + (out.read().decode(errors="replace") if out else ""))
        if time.time() > deadline:
            raise AssertionError(f"server at {base_url} did not start within {timeout_s:.0f} s")
        time.sleep(0.3)


def serve_in_thread(app):
    """Context manager: run ``app`` with the serve commands' runner (``psc6k_web.server``, default
    limits) on a free 127.0.0.1 port in a daemon thread; yields the base URL (for browser tests and
    the screenshot script)."""
    import contextlib
    import threading
    import time

    from psc6k_web.limits import ServerLimits
    from psc6k_web.server import make_server

    @contextlib.contextmanager
    def _serve():
        server, sock = make_server(app, host="127.0.0.1", port=0, limits=ServerLimits(), log_level="warning")
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started:
            if time.time() > deadline or not thread.is_alive():
                raise AssertionError("server did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

    return _serve()
