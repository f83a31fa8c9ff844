"""Categories made from the real photos bundled with scikit-image (when it is installed).

- ``astronaut`` and ``coffee_cup``: the photo itself under a random similarity transform, flip and
  colour jitter; the object mask comes from GrabCut (seeded, so deterministic) inside a fixed box.
- ``horse``: scikit-image's horse silhouette as a single part, textured and shaded over a
  cluttered background like the procedural categories.

Sketches are drawn from the mask's outer contour and the longest Canny edge chains inside it.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.synth import render
from psc6k.synth.shapes import Part, SynthObject, _palette, category_style

#: name -> (scikit-image loader, GrabCut box (x, y, w, h) on the original, or None for a silhouette)
REAL_CATEGORIES = {
    "astronaut": ("astronaut", (5, 5, 360, 507)),
    "coffee_cup": ("coffee", (140, 5, 360, 390)),
    "horse": ("horse", None),
}
#: Ellipses (cx, cy, rx, ry) added to a GrabCut mask where the small-scale GrabCut misses a part
#: (the astronaut's head, against a similar-coloured wall).
_MASK_EXTRA = {"astronaut": [(222, 112, 72, 98)]}
_WORK_SIDE = 256  # GrabCut runs on the photo shrunk to this longest side (speed)


def available() -> list[str]:
    """Real-photo categories usable here (empty without scikit-image)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return []
    return list(REAL_CATEGORIES)


@functools.lru_cache(maxsize=None)
def source(name: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(RGB uint8 photo or None, bool object mask) of a real category, computed once per process."""
    import skimage.data

    loader, box = REAL_CATEGORIES[name]
    img = getattr(skimage.data, loader)()
    if box is None:  # a silhouette: dark object on white
        return None, ~np.asarray(img, bool)
    h, w = img.shape[:2]
    f = _WORK_SIDE / max(h, w)
    small = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    x, y, bw, bh = (int(round(v * f)) for v in box)
    mask = np.zeros(small.shape[:2], np.uint8)
    cv2.setRNGSeed(12345)  # GrabCut's GMM initialisation draws from OpenCV's global RNG
    cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, (x, y, bw, bh), np.zeros((1, 65)),
                np.zeros((1, 65)), 4, cv2.GC_INIT_WITH_RECT)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 0.01 * fg.size]
    fg = np.isin(lab, keep).astype(np.uint8)
    for cx, cy, rx, ry in _MASK_EXTRA.get(name, []):
        cv2.ellipse(fg, (round(cx * f), round(cy * f)), (round(rx * f), round(ry * f)), 0, 0, 360, 1, -1)
    # join the kept pieces (e.g. head and suit) and fill holes: one object, one outer contour
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    cnts, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    fg = np.zeros_like(fg)
    cv2.drawContours(fg, [max(cnts, key=cv2.contourArea)], -1, 1, -1)
    fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)
    return img, fg.astype(bool)


def _pose(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 similarity (+ mirror) putting the mask's box at 55-85% of a 256 image, randomly placed."""
    ys, xs = np.nonzero(mask)
    lo, hi = np.array([xs.min(), ys.min()], float), np.array([xs.max(), ys.max()], float)
    centre = (lo + hi) / 2
    angle = np.deg2rad(rng.uniform(-12, 12))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    size = rng.uniform(0.55, 0.85) * IMAGE_SIZE
    s = size / float((hi - lo).max())
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([flip, 1.0]) * s
    corners = (np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]) - centre) @ rot.T
    clo, chi = corners.min(0), corners.max(0)
    margin = 8.0
    room = np.maximum(IMAGE_SIZE - 1 - 2 * margin - (chi - clo), 0)
    t = margin - clo + rng.uniform(0, 1, 2) * room
    return np.hstack([rot, (t - rot @ centre)[:, None]])


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.8, 1.2)
    hsv[..., 2] = hsv[..., 2] * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out += rng.normal(0, 2.0, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _contour_polygon(mask: np.ndarray) -> np.ndarray:
    cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(cnts, key=cv2.contourArea)
    return c.reshape(-1, 2).astype(np.float64)


def make_scene(name: str, rng: np.random.Generator):
    """One photo of a real category: (RGB uint8 [256, 256, 3], SynthObject, render.Outline)."""
    img, mask = source(name)
    m = _pose(mask, rng)
    if img is None:  # silhouette: render it like a procedural part
        poly = _contour_polygon(mask) @ m[:, :2].T + m[:, 2]
        obj = SynthObject(name, [Part("body", poly)], _palette(category_style(name + "/palette"), 3))
        layers = render.render_photo(obj, rng)
        return layers.image, obj, render.outlines(layers, obj)
    photo = cv2.warpAffine(img, m, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_AREA if m[0, 0] ** 2 + m[0, 1] ** 2 < 1
                           else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    photo = _jitter(photo, rng)
    hr_m = m.copy()
    hr_m[:, :2] *= render.SS
    hr_m[:, 2] = (m[:, 2] + 0.5) * render.SS - 0.5
    mask_hr = cv2.warpAffine(mask.astype(np.uint8), hr_m, (IMAGE_SIZE * render.SS,) * 2, flags=cv2.INTER_NEAREST)
    layers = render.PhotoLayers(photo, [mask_hr], mask_hr)
    poly = _contour_polygon(cv2.resize(mask_hr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA) > 0)
    obj = SynthObject(name, [Part("body", poly)], np.zeros((1, 3)))
    outline = render.outlines(layers, obj)
    outline.parts = _inner_edges(photo, mask_hr)
    return photo, obj, outline


def _inner_edges(photo: np.ndarray, mask_hr: np.ndarray, n_max: int = 14, min_len: float = 25.0) -> list:
    """The longest Canny edge chains well inside the object, as open outline runs."""
    gray = cv2.GaussianBlur(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), (0, 0), 1.5)
    edges = cv2.Canny(gray, 40, 110)
    inside = cv2.resize(mask_hr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    edges[~inside] = 0
    cnts, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    chains = []
    for c in cnts:
        pts = c.reshape(-1, 2).astype(np.float64)
        # findContours walks both sides of a 1-px edge: keep the first half of the loop
        half = pts[: max(2, len(pts) // 2)]
        length = float(np.linalg.norm(np.diff(half, axis=0), axis=1).sum())
        if length >= min_len:
            chains.append((length, half))
    chains.sort(key=lambda t: -t[0])
    out = []
    for _, pts in chains[:n_max]:
        vis = np.ones(len(pts), bool)
        vis[-1] = False  # an open chain: one run from start to end
        out.append(("body", pts, vis))
    return out
