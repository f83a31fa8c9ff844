"""Synthetic inputs for tests and benchmarks of the core: annotations, submissions, sketches.

The one home of the core's fixtures (numpy, OpenCV; no torch, no web stack): the tests of every
layer and the benchmarks import them from here. Studies on disk are built by the annotation
app's own testing module, checkpoints by the model zoo's.

>>> ann = make_annotations(2, 1, 2)
>>> len(ann), ann.categories[:2], ann.photo_kps.shape
(4, ('airplane', 'alarm_clock'), (4, 8, 2))
>>> sub = make_flow_submission(ann, size=4)
>>> sub.kind, sub.sketch_to_photo.shape
('flow', (4, 4, 4, 2))
"""

from __future__ import annotations

import cv2
import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.formats import Annotations
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath
from psc6k.submission import Submission, identity_flow

__all__ = ["add_specks", "make_annotations", "make_flow_submission", "make_keypoint_submission", "make_sketch",
           "split_drawing"]


def make_annotations(n_categories: int = 3, photos_per_category: int = 2, sketches_per_photo: int = 2, *,
                     seed: int = 0, categories=None, n_pairs: int | None = None) -> Annotations:
    """Random PSC6K-shaped annotations on Sketchy paths (they exercise code, not the science).

    Parameters
    ----------
    n_categories, photos_per_category, sketches_per_photo : int
        ``n_categories * photos_per_category * sketches_per_photo`` pairs, category by category;
        the full PSC6K size is ``(125, 10, 5)`` = 6,250 pairs.
    seed : int
    categories : sequence of str, optional
        Category names (default: the first Sketchy ones); their number replaces ``n_categories``.
    n_pairs : int, optional
        Instead of a full grid: ``n_pairs`` pairs dealt to the categories in turn (pair ``i`` in
        category ``i % n_categories``), so that a few pairs still span several categories.

    Returns
    -------
    Annotations
        Photo keypoints uniform in [10, 245] px, ``[N, 8, 2]``; sketch keypoints the photo ones
        plus N(0, 20 px) noise, clipped to [0, 255].
    """
    categories = tuple(categories) if categories is not None else SKETCHY_CATEGORIES[:n_categories]
    if n_pairs is None:
        slots = [(c, p, s) for c in range(len(categories)) for p in range(photos_per_category)
                 for s in range(sketches_per_photo)]
    else:
        slots = [(i % len(categories), i // len(categories) // sketches_per_photo,
                  i // len(categories) % sketches_per_photo) for i in range(n_pairs)]
    photo, sketch = [], []
    for c, p, s in slots:
        photo_id = f"n{c:08d}_{p + 1}"
        photo.append(photo_relpath(categories[c], photo_id))
        sketch.append(sketch_relpath(categories[c], f"{photo_id}-{s + 1}"))
    rng = np.random.default_rng(seed)
    photo_kps = rng.uniform(10, 245, size=(len(photo), NUM_KEYPOINTS, 2))
    sketch_kps = np.clip(photo_kps + rng.normal(0, 20, size=photo_kps.shape), 0, 255)
    return Annotations.from_arrays(photo, sketch, photo_kps, sketch_kps)


def make_flow_submission(ann: Annotations, size: int = 16, noise: float = 0.05, seed: int = 1,
                         method: str = "noisy-identity") -> Submission:
    """Identity flows plus Gaussian noise (normalised units), shape ``[N, size, size, 2]``."""
    rng = np.random.default_rng(seed)
    base = identity_flow(len(ann), size)
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


# ------------------------------------------------------------------ Sketchy-like sketches (OpenCV)

def make_sketch(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A uint8 [size, size] sketch: black anti-aliased strokes on white.

    A closed blob outline (random harmonics) with a few gaps, optional limbs (open strokes
    leaving the outline) and interior detail strokes, at 1-3 px thickness.
    """
    img = np.full((size, size), 255, np.uint8)
    c = size / 2 + rng.normal(0, size * 0.04, 2)
    r0 = size * rng.uniform(0.22, 0.34)
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = np.full_like(t, r0)
    for h in range(2, 6):
        r += r0 * rng.uniform(0, 0.25 / h * 2) * np.cos(h * t + rng.uniform(0, 2 * np.pi))
    sx, sy = rng.uniform(0.7, 1.2, 2)
    pts = np.column_stack([c[0] + sx * r * np.cos(t), c[1] + sy * r * np.sin(t)])
    pts = np.clip(pts, 4, size - 5)
    th = int(rng.integers(1, 4))
    # outline in pieces with small gaps (sketches are rarely closed)
    n_gaps = int(rng.integers(0, 3))
    cuts = np.sort(rng.choice(200, n_gaps, replace=False)) if n_gaps else np.array([], int)
    segs = np.split(np.arange(200), cuts)
    if n_gaps:
        segs[0] = np.concatenate([segs[-1], segs[0]]); segs = segs[:-1]
    for s in segs:
        s = s[: max(2, len(s) - int(rng.integers(0, 3)))]
        cv2.polylines(img, [np.round(pts[s] * 16).astype(np.int32)], False, 0, th, cv2.LINE_AA, 4)
    if not n_gaps:
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], True, 0, th, cv2.LINE_AA, 4)
    # limbs: open two-stroke shapes starting on the outline
    for _ in range(int(rng.integers(0, 4))):
        i = int(rng.integers(0, 200))
        p = pts[i]
        d = (p - c) / np.linalg.norm(p - c)
        L = size * rng.uniform(0.08, 0.2)
        w = size * rng.uniform(0.02, 0.05)
        n = np.array([-d[1], d[0]])
        a, b = p + n * w, p - n * w
        tip = p + d * L
        for q in (a, b):
            seg = np.array([q, tip + (q - p) * 0.5])
            seg = np.clip(seg, 2, size - 3)
            cv2.polylines(img, [np.round(seg * 16).astype(np.int32)], False, 0, th, cv2.LINE_AA, 4)
    # interior details
    for _ in range(int(rng.integers(0, 5))):
        p = c + rng.normal(0, r0 * 0.4, 2)
        q = p + rng.normal(0, r0 * 0.3, 2)
        cv2.line(img, tuple(np.round(p * 16).astype(int)), tuple(np.round(q * 16).astype(int)), 0, 1,
                 cv2.LINE_AA, 4)
    return img


def add_specks(img: np.ndarray, rng: np.random.Generator, n: int, min_gap: float,
               max_gap: float, max_size: float = 4.0, outside: bool = False) -> np.ndarray:
    """A copy of ``img`` with ``n`` pen specks (dots and short ticks, up to ``max_size`` px)
    placed ``min_gap``..``max_gap`` px (chessboard) from the nearest existing stroke; the
    stray marks real scans and tablet drawings carry.  ``outside``: only outside the drawing
    (outside its outline closed by 8 px)."""
    out = img.copy()
    ink = img < 128
    dist = cv2.distanceTransform((~ink).astype(np.uint8), cv2.DIST_C, 3)
    ok = (dist >= min_gap + max_size) & (dist <= max_gap)
    if outside:
        from scipy import ndimage

        ok &= ~ndimage.binary_fill_holes(dist <= 8)
    rows, cols = np.nonzero(ok)
    if rows.size == 0:
        return out
    for i in rng.choice(rows.size, size=min(n, rows.size), replace=False):
        p = np.array([cols[i], rows[i]], float)
        if rng.random() < 0.5:  # a dot
            cv2.circle(out, tuple(np.round(p * 16).astype(int)), int(16 * rng.uniform(0.5, max_size / 2)),
                       0, -1, cv2.LINE_AA, 4)
        else:  # a short tick
            q = p + rng.uniform(-max_size, max_size, 2)
            cv2.line(out, tuple(np.round(p * 16).astype(int)), tuple(np.round(q * 16).astype(int)), 0,
                     int(rng.integers(1, 3)), cv2.LINE_AA, 4)
    return out


def split_drawing(rng: np.random.Generator, gap: int, size: int = 256) -> np.ndarray:
    """Two large drawings side by side, ``gap`` px (chessboard) apart: an object drawn in two
    separate pieces (a body and a detached head, a cup and its saucer)."""
    a = make_sketch(rng, size)
    ink = a < 128
    cols = np.flatnonzero(ink.any(axis=0))
    half = (cols[0] + cols[-1]) // 2
    left = np.full_like(a, 255)
    left[:, :half] = a[:, :half]
    right = np.full_like(a, 255)
    right[:, half:] = a[:, half:]
    shift = gap // 2 + 1
    out = np.full_like(a, 255)
    out[:, :size - shift] = np.minimum(out[:, :size - shift], left[:, shift:])
    out[:, shift:] = np.minimum(out[:, shift:], right[:, :size - shift])
    return out
