"""Shared fixtures only (helpers that tests call live in ``helpers.py``). Area-specific fixtures live in
each area's own test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, in_ci

from psc6k.formats import Annotations
from psc6k.testing import make_annotations


@pytest.fixture
def small_annotations() -> Annotations:
    return make_annotations(5, 2, 2)  # 20 pairs in 5 categories


# ------------------------------------------------------------------------------ annotation databases
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    from annotation_app.testing import postgres_test_url, reset_postgres

    url = postgres_test_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PSC6K_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run")
        pytest.skip("set PSC6K_TEST_POSTGRES_URL to run the PostgreSQL variant")
    return reset_postgres(url)


# ------------------------------------------------------------------------------ browser
# One Chromium per test session, shared by every browser test: Playwright's sync API cannot run
# a second instance in the same thread while the first is alive.
@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        msg = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set PSC6K_CHROMIUM)"
        if in_ci():
            pytest.fail(msg + " — browser tests must run in CI, not skip")
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - depends on the environment
        if in_ci():
            pytest.fail(f"the playwright Python package is missing: {e}")
        pytest.skip(f"the playwright Python package is missing: {e}")
    # Never let Playwright fetch its own browser build.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


