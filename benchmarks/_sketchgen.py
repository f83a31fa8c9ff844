"""Sketchy-like test sketches drawn with OpenCV (for the keypoint benchmark)."""
from __future__ import annotations

import cv2
import numpy as np


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
