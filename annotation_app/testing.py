"""A small Sketchy-shaped study on disk, for the tests and the benchmark of the annotation app."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.formats import TrainPairs, write_keypoints_csv, write_pair_list
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath

from . import db


def make_study_files(root, n_categories: int = 5, photos_per_category: int = 2,
                     sketches_per_photo: int = 1, seed: int = 0) -> dict:
    """Write a tiny Sketchy tree (256x256 images) plus ``pairs.csv`` and ``keypoints.csv``.

    Returns
    -------
    dict
        ``images`` (the Sketchy root), ``pairs`` and ``keypoints`` paths, and ``photo``,
        ``sketch`` lists of the registered pairs.
    """
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    images = root / "Sketchy"
    photo, sketch, kps = [], [], {}
    for ci, cat in enumerate(SKETCHY_CATEGORIES[:n_categories]):
        for pi in range(photos_per_category):
            pid = f"n{ci:08d}_{pi}"
            prel = photo_relpath(cat, pid)
            (images / prel).parent.mkdir(parents=True, exist_ok=True)
            img = np.full((256, 256, 3), 200, np.uint8)
            cv2.circle(img, (128, 128), 40 + 10 * pi, (ci % 255, 90, 30), -1)
            cv2.imwrite(str(images / prel), img)
            for si in range(sketches_per_photo):
                srel = sketch_relpath(cat, f"{pid}-{si + 1}")
                (images / srel).parent.mkdir(parents=True, exist_ok=True)
                sk = np.full((256, 256), 255, np.uint8)
                cv2.circle(sk, (128, 128), 50, 0, 2)
                cv2.imwrite(str(images / srel), sk)
                photo.append(prel)
                sketch.append(srel)
                kps[srel] = rng.uniform(20, 235, size=(NUM_KEYPOINTS, 2)).round(1)
    pairs_csv = root / "pairs.csv"
    write_pair_list(TrainPairs.from_paths(photo, sketch), pairs_csv)
    kp_csv = root / "keypoints.csv"
    write_keypoints_csv(kps, kp_csv)
    return {"images": images, "pairs": pairs_csv, "keypoints": kp_csv, "photo": photo, "sketch": sketch,
            "sketch_kps": kps}


def postgres_test_url() -> str | None:
    """``PSC6K_TEST_POSTGRES_URL`` (the lead's .ci/run sets it), or None."""
    import os

    return os.environ.get("PSC6K_TEST_POSTGRES_URL") or None


def reset_postgres(url: str) -> str:
    """Create the database of ``url`` if missing and drop every table of the app in it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = db.normalise_url(url)
    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()
    engine = create_engine(url)
    try:
        db.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return url


class FakeClock:
    """Epoch seconds that move only when a test says so (``clock.t += 600``): leases lapse on cue."""

    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def check_invariants(service) -> None:
    """Assert the 3-annotator design, read back from the database of ``service``."""
    from sqlalchemy import func, select

    n = service.config.annotators_per_keypoint
    with service.read.connect() as conn:
        rows = conn.execute(select(db.clicks.c.task_id, db.clicks.c.session_id, db.clicks.c.slot_index)
                            .where(db.clicks.c.slot_index.is_not(None))).all()
        held = conn.execute(select(db.slots.c.task_id, db.slots.c.holder_session_id)
                            .where(db.slots.c.holder_session_id.is_not(None))).all()
        trials = conn.execute(select(db.trials.c.session_id, db.trials.c.task_id)).all()
        n_free = dict(conn.execute(select(db.tasks.c.id, db.tasks.c.n_free)).all())
        unheld = dict(conn.execute(select(db.slots.c.task_id, func.count()).where(
            db.slots.c.holder_session_id.is_(None)).group_by(db.slots.c.task_id)).all())
        counted = {c: (f, o) for c, f, o in conn.execute(select(db.categories))}
        recounted = {c: (int(f), int(o)) for c, f, o in conn.execute(db.category_counts_query())}
    assert counted == recounted, "the per-category counts are out of step with the tasks"
    per_task: dict = {}
    for t, s, k in rows:
        per_task.setdefault(t, []).append((s, k))
    for t, lst in per_task.items():
        assert len(lst) <= n
        assert len({s for s, _ in lst}) == len(lst), "two clicks of one participant on a keypoint"
        assert len({k for _, k in lst}) == len(lst), "two clicks in one slot"
    assert len(set(held)) == len(held), "a participant holds two slots of one task"
    assert len(set(trials)) == len(trials), "a plan repeats a (pair, keypoint)"
    for t, free in n_free.items():
        assert free == unheld.get(t, 0), f"task {t}: n_free {free} != unheld slots {unheld.get(t, 0)}"
