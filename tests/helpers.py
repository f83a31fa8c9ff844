"""Test-runner helpers shared by several test files (imported as ``from tests.helpers import ...``):
the browser, the CI switch, loopback aliases, an event loop of its own.

Fixtures stay in ``conftest.py``; synthetic data comes from each layer's testing module
(:mod:`psc6k.testing`, ``annotation_app.testing``, ``model_zoo.testing``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket

#: Debian's Chromium, never a downloaded build; ``PSC6K_CHROMIUM`` overrides it.
CHROMIUM = os.environ.get("PSC6K_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def in_ci() -> bool:
    """True when ``CI`` is set: tests that would skip for a missing tool must fail instead."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def can_bind_loopback_aliases() -> bool:
    """Whether a socket may bind 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback): tests
    that play several client addresses bind 127.0.0.x as their source."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


def run_async(coro):
    """``asyncio.run`` in a thread of its own: the session's Playwright fixture keeps an event loop
    running in the main thread once the browser tests have run, and ``asyncio.run`` refuses to
    start inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
