"""Synthetic annotations and submissions for the server's tests and benchmark.

PSC6K-shaped (Sketchy paths, 10 photos x 5 sketches per category, 8 keypoints) but random; they
exercise the HTTP layer, not the science. Built with the foundation's own types.
"""

from __future__ import annotations

import numpy as np

from psc6k.formats import Annotations
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath
from psc6k.submission import Submission, identity_flow


def make_annotations(n_categories: int = 3, photos_per_category: int = 2, sketches_per_photo: int = 2,
                     seed: int = 0) -> Annotations:
    """Random keypoints on Sketchy-style paths; full PSC6K size is ``(125, 10, 5)`` = 6,250 pairs."""
    rng = np.random.default_rng(seed)
    photo, sketch = [], []
    for c, category in enumerate(SKETCHY_CATEGORIES[:n_categories]):
        for p in range(photos_per_category):
            photo_id = f"n{c:08d}_{p + 1}"
            for s in range(sketches_per_photo):
                photo.append(photo_relpath(category, photo_id))
                sketch.append(sketch_relpath(category, f"{photo_id}-{s + 1}"))
    n = len(photo)
    photo_kps = rng.uniform(10, 245, size=(n, 8, 2))
    sketch_kps = np.clip(photo_kps + rng.normal(0, 20, size=(n, 8, 2)), 0, 255)
    return Annotations.from_arrays(photo, sketch, photo_kps, sketch_kps)


def make_flow_submission(ann: Annotations, size: int = 16, noise: float = 0.05, seed: int = 1,
                         method: str = "noisy-identity") -> Submission:
    """Identity flows plus Gaussian noise (normalised units), shape ``[N, size, size, 2]``."""
    rng = np.random.default_rng(seed)
    n = len(ann)
    base = identity_flow(n, size)
    s2p = base + rng.normal(0, noise, size=base.shape)
    p2s = base + rng.normal(0, noise, size=base.shape)
    return Submission(method, "flow", list(ann.photo), list(ann.sketch), s2p, p2s)


def make_keypoint_submission(ann: Annotations, noise_px: float = 15.0, seed: int = 2,
                             method: str = "noisy-oracle") -> Submission:
    """Ground-truth target keypoints plus Gaussian noise in pixels, shape ``[N, 8, 2]``."""
    rng = np.random.default_rng(seed)
    s2p = ann.photo_kps + rng.normal(0, noise_px, size=ann.photo_kps.shape)
    p2s = ann.sketch_kps + rng.normal(0, noise_px, size=ann.sketch_kps.shape)
    return Submission(method, "keypoints", list(ann.photo), list(ann.sketch), s2p, p2s)


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
