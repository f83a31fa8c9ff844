"""Fixtures of the browser tests: a real annotation server on 127.0.0.1 with a small study, and
Debian's Chromium driven by Playwright.

The server is the real app (``annotation_app.app.create_app`` over a SQLite study created by
``annotation_app.study.init_study``) run by uvicorn in a thread. Chromium is never downloaded: the
tests use ``/usr/bin/chromium`` (or ``PSC6K_CHROMIUM``); without it they skip locally and FAIL
when ``CI=true``, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SCREENSHOT_DIR = REPO / "test-output" / "screenshots"
from tests.helpers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (shared with the leaderboard browser test)
ADMIN_TOKEN = "browser-test-admin-token"
LINK_KEY = "browser-link-key"
COMPLETION_CODE = "CBROWSER7"
N_CATEGORIES = 5
TRIALS = 5
# Practice trials: (pair, keypoint); their known answers are the matching photo points, filled
# in by the ``server`` fixture from the drawing geometry (see ``photo_point``).
PRACTICE = [
    {"pair": 0, "keypoint": 0, "answer": None},
    {"pair": 1, "keypoint": 2, "answer": None},
]
PHOTO_SCALE, PHOTO_SHIFT = 1.08, (6.0, 4.0)  # the photo's object is the sketch's, scaled and shifted


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------------ study files
def photo_point(poly, xy):
    """Where sketch point(s) ``xy`` of outline ``poly`` lie on the drawn photo (pixels)."""
    centre = np.asarray(poly, float).mean(0)
    return (np.asarray(xy, float) - centre) * PHOTO_SCALE + centre + PHOTO_SHIFT


def _draw_pair(cat_index: int):
    """A 'photo' (filled, shaded object on a textured background) and a line 'sketch' of the
    same object, plus 8 sketch keypoints on its outline. Deterministic."""
    import cv2

    yy, xx = np.mgrid[0:256, 0:256]
    bg = np.stack([170 + 40 * yy / 255, 185 + 25 * xx / 255, 200 - 30 * yy / 255], -1)
    photo = np.clip(bg, 0, 255).astype(np.uint8)
    sketch = np.full((256, 256), 255, np.uint8)
    colour = [(40, 70, 200), (30, 150, 60), (20, 20, 20), (70, 50, 120), (40, 40, 210)][cat_index % 5]
    # one polygon-ish outline per category, slightly different between photo and sketch
    shapes = [
        np.array([[30, 130], [110, 110], [150, 40], [170, 45], [160, 110], [230, 120], [230, 140],
                  [160, 150], [170, 215], [150, 220], [110, 150], [30, 140]]),            # airplane
        np.array([[128, 40], [190, 70], [215, 128], [190, 190], [128, 215], [66, 190], [41, 128], [66, 70]]),
        np.array([[40, 128], [80, 100], [128, 115], [170, 95], [215, 120], [220, 140], [170, 160],
                  [128, 145], [80, 160]]),
        np.array([[100, 40], [156, 40], [170, 100], [200, 200], [150, 215], [128, 150], [106, 215],
                  [56, 200], [86, 100]]),
        np.array([[128, 60], [170, 50], [210, 90], [205, 170], [160, 215], [96, 215], [51, 170], [46, 90],
                  [86, 50]]),
    ]
    poly = shapes[cat_index % 5]
    photo_poly = np.round(photo_point(poly, poly)).astype(np.int32)
    shade = photo.copy()
    cv2.fillPoly(shade, [photo_poly], colour)
    photo = cv2.addWeighted(shade, 0.9, photo, 0.1, 0)
    cv2.polylines(photo, [photo_poly], True, (15, 15, 15), 2, cv2.LINE_AA)
    cv2.polylines(sketch, [poly.astype(np.int32)], True, 0, 2, cv2.LINE_AA)
    idx = np.linspace(0, len(poly), 8, endpoint=False).astype(int)
    kps = poly[idx].astype(np.float64)
    return photo, sketch, kps, photo_point(poly, kps)


@pytest.fixture(scope="session")
def study_files(tmp_path_factory):
    """A 5-category Sketchy-shaped tree with one pair per category, and its CSVs."""
    import cv2
    from psc6k.formats import TrainPairs, write_keypoints_csv, write_pair_list
    from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath

    root = tmp_path_factory.mktemp("study")
    images = root / "Sketchy"
    photos, sketches, kps, answers = [], [], {}, []
    for ci, cat in enumerate(SKETCHY_CATEGORIES[:N_CATEGORIES]):
        pid = f"n{ci:08d}_1"
        prel, srel = photo_relpath(cat, pid), sketch_relpath(cat, f"{pid}-1")
        photo, sketch, kp, answer = _draw_pair(ci)
        answers.append(answer)
        for rel, img in ((prel, photo), (srel, sketch)):
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(images / rel), img)
        photos.append(prel)
        sketches.append(srel)
        kps[srel] = kp
    # practice pairs: the same drawings under other ids, outside the study (a practice trial is
    # never a (pair, keypoint) whose clicks count)
    practice_photos, practice_sketches = [], []
    for p in PRACTICE:
        cat = SKETCHY_CATEGORIES[p["pair"]]
        pid = f"n{p['pair']:08d}_2"
        prel, srel = photo_relpath(cat, pid), sketch_relpath(cat, f"{pid}-1")
        shutil.copyfile(images / photos[p["pair"]], images / prel)
        shutil.copyfile(images / sketches[p["pair"]], images / srel)
        kps[srel] = kps[sketches[p["pair"]]]
        practice_photos.append(prel)
        practice_sketches.append(srel)
    write_pair_list(TrainPairs.from_paths(photos, sketches), root / "pairs.csv")
    write_keypoints_csv(kps, root / "keypoints.csv")
    return {"root": root, "images": images, "pairs": root / "pairs.csv", "keypoints": root / "keypoints.csv",
            "photo": photos, "sketch": sketches, "sketch_kps": kps, "photo_kps": answers,
            "practice_photo": practice_photos, "practice_sketch": practice_sketches}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The annotation app served by uvicorn in a background thread."""

    def __init__(self, app, port: int):
        import uvicorn

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the annotation server did not start")
            time.sleep(0.02)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(study_files, db_path, *, clock=None, **config_overrides) -> LiveServer:
    """Create a study in ``db_path`` and serve it (the caller stops it).

    ``clock`` (epoch seconds) lets a test make leases lapse; ``config_overrides`` go to
    :class:`annotation_app.config.StudyConfig`. ``server.redirect_url`` is a page on the same
    origin that the tests fulfil themselves (it stands in for Prolific's completion page).
    """
    from annotation_app.app import create_app
    from annotation_app.config import ItemSpec, StudyConfig
    from annotation_app.service import StudyService
    from annotation_app.settings import AnnotationSettings
    from annotation_app.study import init_study

    port = _free_port()
    redirect = f"http://127.0.0.1:{port}/prolific-complete?cc={COMPLETION_CODE}"
    for p in PRACTICE:
        p["answer"] = [round(float(v), 2) for v in study_files["photo_kps"][p["pair"]][p["keypoint"]]]
    practice = [ItemSpec(photo=study_files["practice_photo"][i], sketch=study_files["practice_sketch"][i],
                         keypoint=p["keypoint"], answer=list(p["answer"]), tolerance_px=25.6)
                for i, p in enumerate(PRACTICE)]
    settings = dict(title="Find the matching point (browser test)", trials_per_participant=TRIALS,
                    annotators_per_keypoint=3, completion_code=COMPLETION_CODE, redirect_url=redirect,
                    practice_items=practice, practice_count=len(practice), link_key=LINK_KEY)
    settings.update(config_overrides)
    db_url = f"sqlite:///{db_path}"
    init_study(db_url, study_files["pairs"], study_files["images"], StudyConfig(**settings), study_files["keypoints"])
    service = StudyService(db_url, clock=clock)
    app = create_app(AnnotationSettings(db_url=db_url, admin_token=ADMIN_TOKEN), service=service)
    live = LiveServer(app, port).start()
    live.app, live.service = app, service
    live.redirect_url = redirect
    live.admin_token = ADMIN_TOKEN
    live.link_key = LINK_KEY
    live.completion_code = COMPLETION_CODE
    live.study_files = study_files
    return live


@pytest.fixture(scope="session")
def server(study_files):
    """The real annotation app on a free 127.0.0.1 port with the 5-category study."""
    live = start_server(study_files, study_files["root"] / "study.db")
    yield live
    live.stop()


@pytest.fixture(scope="session")
def admin(server):
    """httpx client with the admin token, for checking what the database holds."""
    import httpx

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10) as c:
        yield c


# ------------------------------------------------------------------------------ browser
@pytest.fixture
def new_page(browser, server):
    """Factory: a fresh browser context (own localStorage) and page; closed after the test.
    Page errors (uncaught exceptions) and Content-Security-Policy violations fail the test."""
    contexts = []

    def make(**context_args):
        args = {"viewport": {"width": 1280, "height": 720}}
        args.update(context_args)
        ctx = browser.new_context(**args)
        ctx.set_default_timeout(15000)
        # the stand-in for Prolific's completion page
        ctx.route("**/prolific-complete*", lambda route: route.fulfill(
            status=200, content_type="text/html",
            body="<!doctype html><title>Prolific</title><h1>Submission complete</h1>"))
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        # the Content-Security-Policy must not block anything the pages themselves load or run
        page.on("console", lambda m: page.errors.append(m.text) if "Content Security Policy" in m.text else None)
        contexts.append((ctx, page))
        return page

    yield make
    for ctx, page in contexts:
        errors = page.errors
        ctx.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshot_dir():
    """Where the tests save screenshots (test-output/screenshots, git-ignored). With
    ``PSC6K_UPDATE_SCREENSHOTS=1`` they are also copied into docs/screenshots at the end — do
    that after looking at them."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    yield SCREENSHOT_DIR
    if os.environ.get("PSC6K_UPDATE_SCREENSHOTS") == "1":
        dst = REPO / "docs" / "screenshots"
        dst.mkdir(parents=True, exist_ok=True)
        for png in sorted(SCREENSHOT_DIR.glob("*.png")):
            shutil.copy2(png, dst / png.name)
