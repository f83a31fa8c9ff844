"""Shared fixtures. Area-specific fixtures live in each area's own test files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from psc6k.formats import Annotations
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath


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


@pytest.fixture
def small_annotations() -> Annotations:
    return make_annotations()


# ------------------------------------------------------------------------------ browser
# One Chromium per test session, shared by every browser test: Playwright's sync API cannot run
# a second instance in the same thread while the first is alive.
CHROMIUM = os.environ.get("PSC6K_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        msg = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set PSC6K_CHROMIUM)"
        if _in_ci():
            pytest.fail(msg + " — browser tests must run in CI, not skip")
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - depends on the environment
        if _in_ci():
            pytest.fail(f"the playwright Python package is missing: {e}")
        pytest.skip(f"the playwright Python package is missing: {e}")
    # Never let Playwright fetch its own browser build.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


