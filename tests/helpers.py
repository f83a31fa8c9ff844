"""Helpers shared by several test files (imported as ``from tests.helpers import ...``).

Fixtures stay in ``conftest.py``; plain functions and constants that tests call live here, so no
test imports ``conftest`` as a library (pytest may load it under another module name).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket

import numpy as np

from psc6k.formats import Annotations
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath

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


def make_annotations(n_pairs: int = 20, seed: int = 0, categories=SKETCHY_CATEGORIES[:5]) -> Annotations:
    """Random annotations on real Sketchy category names, `n_pairs` pairs spread over categories."""
    rng = np.random.default_rng(seed)
    photo, sketch = [], []
    for i in range(n_pairs):
        cat = categories[i % len(categories)]
        photo.append(photo_relpath(cat, f"n0000_{i // 2}"))
        sketch.append(sketch_relpath(cat, f"n0000_{i // 2}-{i % 2 + 1}"))
    pk = rng.uniform(0, 255, (n_pairs, 8, 2)).round(2)
    sk = rng.uniform(0, 255, (n_pairs, 8, 2)).round(2)
    return Annotations.from_arrays(photo, sketch, pk, sk)


def run_async(coro):
    """``asyncio.run`` in a thread of its own: the session's Playwright fixture keeps an event loop
    running in the main thread once the browser tests have run, and ``asyncio.run`` refuses to
    start inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
