"""Photo-sketch pairs of PSC6K sampled from a Sketchy download (paper §2.1, SPEC §2-3).

The test split is the photos of ``info/testset.txt`` (1,250 = 10 per category in Sketchy); each
gets ``sketches_per_photo`` (5) of its *valid* sketches, sampled without replacement.  The
training split is every valid sketch of every other photo.

Which sketches are invalid
--------------------------
Sketchy ships four lists of sketches its authors judged unusable, ``info/invalid-<name>.txt``:

``error``      the sketch is wrong or unfinished (not the object, scribbles)
``ambiguous``  the object cannot be recognised from the sketch
``pose``       the sketch's pose differs from the photo's (e.g. facing the other way)
``context``    the sketch draws the background or other objects besides the object

By default ``error`` and ``pose`` are dropped (:data:`PAPER_INVALID_LISTS`): the paper (§2.1,
SPEC §2) filtered the sketches "completely off-target or that depicted the photographed object
from the wrong perspective" — wrong sketches have no counterpart of the photo's parts, and a
different pose makes the photo location of a sketch keypoint ill-defined (the crowd would click
the mirror part).  ``invalid_lists`` chooses another subset: all four
(:data:`psc6k.sketchy.INVALID_LISTS`) also drop unrecognisable sketches and sketches with
context strokes (which enlarge the filled object mask), at the price of sampling from a smaller
pool than the paper did.

Sampling is seeded per photo (``seed`` and a CRC of the photo id), so a photo's sample does not
change when other photos are added to or removed from the test list.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psc6k.errors import Psc6kError
from psc6k.formats import TrainPairs
from psc6k.sketchy import (INVALID_LISTS, PHOTO_DIR, SKETCH_DIR, SKETCHY_CATEGORIES,
                           photo_id_of_sketch, read_id_list, read_id_list_with_category)

#: The lists the paper drops (§2.1): off-target and wrong-perspective sketches.
PAPER_INVALID_LISTS = ("error", "pose")

__all__ = ["PAPER_INVALID_LISTS", "PairBuild", "build_pairs", "sample_sketches", "scan_sketchy", "read_invalid"]

_PHOTO_EXTS = (".jpg", ".jpeg", ".png")
_SKETCH_EXTS = (".png", ".jpg", ".jpeg")


@dataclass
class PairBuild:
    """Result of :func:`build_pairs`.

    Attributes
    ----------
    test, train : TrainPairs
        Test pairs (photo, sketch, class), ``sketches_per_photo`` per test photo when it has
        enough valid sketches; training pairs (every valid sketch of every other photo).
    short_photos : list of dict
        Test photos with fewer valid sketches than asked: ``{"photo", "n_valid", "n_sketches"}``.
    missing_photos : list of str
        Test-list ids with no photo on disk (skipped).
    summary : dict
        Counts and settings, JSON-ready (written as ``summary.json`` by the command).
    """

    test: TrainPairs
    train: TrainPairs
    short_photos: list = field(default_factory=list)
    missing_photos: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def scan_sketchy(root) -> tuple[dict[str, tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """Index a Sketchy tree.

    Returns
    -------
    photos : {photo_id: (category, relpath)}
    sketches : {photo_id: [(sketch_id, relpath), ...]} sorted by sketch id (numerically by the
        ``-N`` suffix).
    """
    root = Path(root)
    photo_root, sketch_root = root / PHOTO_DIR, root / SKETCH_DIR
    if not photo_root.is_dir():
        raise Psc6kError(f"{root}: not a Sketchy root (no folder {PHOTO_DIR})")
    if not sketch_root.is_dir():
        raise Psc6kError(f"{root}: not a Sketchy root (no folder {SKETCH_DIR})")
    photos: dict[str, tuple[str, str]] = {}
    for cat_dir in sorted(p for p in photo_root.iterdir() if p.is_dir()):
        for entry in sorted(os.scandir(cat_dir), key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in _PHOTO_EXTS and entry.is_file():
                rel = f"{PHOTO_DIR}/{cat_dir.name}/{entry.name}"
                if stem in photos and photos[stem][0] != cat_dir.name:
                    raise Psc6kError(f"photo id {stem!r} appears in two categories: "
                                     f"{photos[stem][0]!r} and {cat_dir.name!r}")
                photos[stem] = (cat_dir.name, rel)
    sketches: dict[str, list[tuple[str, str]]] = {}
    for cat_dir in sorted(p for p in sketch_root.iterdir() if p.is_dir()):
        for entry in os.scandir(cat_dir):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in _SKETCH_EXTS and entry.is_file():
                sketches.setdefault(photo_id_of_sketch(stem), []).append(
                    (stem, f"{SKETCH_DIR}/{cat_dir.name}/{entry.name}"))
    for lst in sketches.values():
        lst.sort(key=lambda s: _sketch_sort_key(s[0]))
    return photos, sketches


def _sketch_sort_key(sketch_id: str):
    head, _, tail = sketch_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (sketch_id, -1)


def read_invalid(root, lists=INVALID_LISTS) -> tuple[dict[str, set[str]], list[str]]:
    """Read ``info/invalid-<name>.txt`` for each name; returns ({name: ids}, missing file names)."""
    out, missing = {}, []
    for name in lists:
        path = Path(root) / "info" / f"invalid-{name}.txt"
        if path.is_file():
            out[name] = set(read_id_list(path))
        else:
            missing.append(str(path))
            out[name] = set()
    return out, missing


def sample_sketches(candidates: list, n: int, seed: int, photo_id: str) -> list:
    """``n`` of ``candidates`` without replacement (all when fewer), seeded by ``seed`` and the
    photo id, returned in the candidates' order."""
    if len(candidates) <= n:
        return list(candidates)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(photo_id.encode("utf-8"))])
    idx = np.sort(rng.choice(len(candidates), size=n, replace=False))
    return [candidates[i] for i in idx]


def _resolve_categories(found) -> tuple[str, ...]:
    found = set(found)
    return SKETCHY_CATEGORIES if found <= set(SKETCHY_CATEGORIES) else tuple(sorted(found))


def build_pairs(root, *, sketches_per_photo: int = 5, seed: int = 0, invalid_lists=PAPER_INVALID_LISTS,
                testset=None, with_train: bool = True) -> PairBuild:
    """Sample PSC6K test pairs and list training pairs from a Sketchy root.

    Parameters
    ----------
    root : path
        Sketchy root (SPEC §2).
    sketches_per_photo : int
        Valid sketches per test photo (5 in PSC6K).
    seed : int
        Sampling seed.
    invalid_lists : sequence of str
        Which of ``error, pose, ambiguous, context`` to drop; default the paper's ``error,
        pose`` (see the module docstring).
    testset : path, optional
        Test photo list (default ``root/info/testset.txt``).
    with_train : bool
        Also list the training pairs.
    """
    root = Path(root)
    if sketches_per_photo < 1:
        raise Psc6kError(f"sketches per photo must be >= 1, got {sketches_per_photo}")
    unknown = [n for n in invalid_lists if n not in INVALID_LISTS]
    if unknown:
        raise Psc6kError(f"unknown invalid list(s) {unknown}; choose from {', '.join(INVALID_LISTS)}")
    if not (root / PHOTO_DIR).is_dir():
        raise Psc6kError(f"{root}: not a Sketchy root (no folder {PHOTO_DIR})")
    testset = Path(testset) if testset is not None else root / "info" / "testset.txt"
    if not testset.is_file():
        raise Psc6kError(f"{testset}: test photo list not found (expected Sketchy's info/testset.txt)")
    photos, sketches = scan_sketchy(root)
    if not photos:
        raise Psc6kError(f"{root / PHOTO_DIR}: no photos found")
    invalid, missing_lists = read_invalid(root, invalid_lists)
    invalid_all = set().union(*invalid.values()) if invalid else set()

    test_ids, seen, missing_photos, wrong_category = [], set(), [], []
    for cat, pid in read_id_list_with_category(testset):
        if pid in seen:
            continue
        seen.add(pid)
        if pid not in photos:
            missing_photos.append(pid)
            continue
        if cat is not None and cat != photos[pid][0]:
            wrong_category.append({"photo": pid, "listed": cat, "on_disk": photos[pid][0]})
        test_ids.append(pid)
    if not test_ids:
        raise Psc6kError(f"{testset}: none of its {len(seen)} photo ids has a photo under {root / PHOTO_DIR}")

    categories = _resolve_categories(c for c, _ in photos.values())

    def valid_of(pid):
        return [s for s in sketches.get(pid, []) if s[0] not in invalid_all]

    t_photo, t_sketch, short = [], [], []
    for pid in test_ids:
        valid = valid_of(pid)
        chosen = sample_sketches(valid, sketches_per_photo, seed, pid)
        if len(valid) < sketches_per_photo:
            short.append({"photo": photos[pid][1], "n_valid": len(valid),
                          "n_sketches": len(sketches.get(pid, []))})
        for _, rel in chosen:
            t_photo.append(photos[pid][1])
            t_sketch.append(rel)
    if not t_photo:
        raise Psc6kError("no test pairs: no test photo has a valid sketch")
    test = TrainPairs.from_paths(t_photo, t_sketch, categories)

    tr_photo, tr_sketch = [], []
    if with_train:
        test_set = set(test_ids)
        for pid in sorted(photos, key=lambda p: (photos[p][0], p)):
            if pid in test_set:
                continue
            for _, rel in valid_of(pid):
                tr_photo.append(photos[pid][1])
                tr_sketch.append(rel)
    train = TrainPairs.from_paths(tr_photo, tr_sketch, categories) if tr_photo else \
        TrainPairs([], [], np.zeros(0, np.int64), categories)

    all_sketch_ids = {s for lst in sketches.values() for s, _ in lst}
    n_invalid_present = {name: len(ids & all_sketch_ids) for name, ids in invalid.items()}
    per_cat = {}
    for p in test.photo:
        per_cat.setdefault(p.split("/")[-2], set()).add(p)
    summary = {
        "sketchy_root": str(root.resolve()),
        "testset": str(testset),
        "seed": int(seed),
        "sketches_per_photo": int(sketches_per_photo),
        "invalid_lists_dropped": list(invalid_lists),
        "invalid_lists_missing": missing_lists,
        "invalid_ids_listed": {k: len(v) for k, v in invalid.items()},
        "invalid_sketches_on_disk": n_invalid_present,
        "n_photos_on_disk": len(photos),
        "n_sketches_on_disk": len(all_sketch_ids),
        "n_test_photos_listed": len(seen),
        "n_test_photos": len(test_ids),
        "n_test_pairs": len(test),
        "n_test_categories": len(per_cat),
        "test_photos_per_category": {"min": min(len(v) for v in per_cat.values()),
                                     "max": max(len(v) for v in per_cat.values())},
        "n_short_photos": len(short),
        "short_photos": short,
        "missing_photos": missing_photos,
        "testset_category_mismatch": wrong_category,
        "n_train_photos": len(set(train.photo)),
        "n_train_pairs": len(train),
        "n_categories": len(categories) if categories is not SKETCHY_CATEGORIES else len(
            {c for c, _ in photos.values()}),
        "class_index": "sketchy-125" if categories is SKETCHY_CATEGORIES else "sorted-found",
    }
    return PairBuild(test, train, short, missing_photos, summary)
