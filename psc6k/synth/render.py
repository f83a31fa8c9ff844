"""Rendering: textured, shaded photos on cluttered backgrounds, and human-like sketches.

Photos are composed in float RGB at 256 x 256 from anti-aliased part masks (polygons filled at 4x
and area-averaged). Sketches are polylines in photo pixels (outer contour of the object, visible
inner part boundaries), made human-like (strokes of random length with gaps, overlaps and
overshoots, wobble, width variation, omitted parts, a few extra strokes), then mapped into the
sketch frame through the inverse of the pair's :class:`~psc6k.synth.warp.SmoothWarp` and drawn
anti-aliased at 4x. All randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from psc6k import IMAGE_SIZE

#: Supersampling factor of every rasterisation.
SS = 2
_SHIFT = 4  # fixed-point bits of cv2 polygon / line coordinates


def _to_fixed(points: np.ndarray) -> np.ndarray:
    """Photo pixels -> fixed-point coordinates of the SS-times canvas (pixel centres kept)."""
    return np.round(((np.asarray(points) + 0.5) * SS - 0.5) * (1 << _SHIFT)).astype(np.int32)


def polygon_mask_hr(polygon: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} mask [256*SS, 256*SS] of a polygon given in photo pixels."""
    canvas = np.zeros((IMAGE_SIZE * SS, IMAGE_SIZE * SS), np.uint8)
    cv2.fillPoly(canvas, [_to_fixed(polygon).reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas


def downsample(hr: np.ndarray) -> np.ndarray:
    """Area-average an SS-times image down to 256 x 256 (float32)."""
    return cv2.resize(hr.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------ textures
def value_noise(rng: np.random.Generator, cells: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a ``cells`` x ``cells`` random grid, bicubically enlarged."""
    g = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    out = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    return out / (np.abs(out).max() + 1e-6)


def fractal_noise(rng: np.random.Generator, octaves=(4, 8, 16, 32)) -> np.ndarray:
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i, c in enumerate(octaves):
        out += value_noise(rng, c) * 0.6 ** i
    return out / (np.abs(out).max() + 1e-6)


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A texture modulation in about [-1, 1], [256, 256] float32."""
    yy, xx = _YY, _XX
    if kind == "stripes":
        a = rng.uniform(0, np.pi)
        f = rng.uniform(0.15, 0.45)
        return np.sin((xx * np.cos(a) + yy * np.sin(a)) * f).astype(np.float32)
    if kind == "checker":
        f = rng.uniform(6, 14)
        return np.where(((xx // f + yy // f) % 2) == 0, 1.0, -1.0).astype(np.float32) * 0.6
    if kind == "spots":
        out = np.full((IMAGE_SIZE, IMAGE_SIZE), -0.3, np.float32)
        for _ in range(rng.integers(20, 60)):
            c = rng.uniform(0, IMAGE_SIZE, 2)
            cv2.circle(out, (int(c[0]), int(c[1])), int(rng.integers(2, 7)), 1.0, -1)
        return out
    if kind == "noise":
        return fractal_noise(rng, (8, 16, 32, 64))
    return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)


TEXTURES = ("flat", "noise", "stripes", "spots", "checker", "noise")


# ------------------------------------------------------------------------------ photos
@dataclass
class PhotoLayers:
    """What the sketcher needs from a rendered photo."""

    image: np.ndarray            # uint8 [256, 256, 3] RGB
    part_masks_hr: list          # uint8 {0,1} [256*SS, 256*SS] per part, in draw order
    object_mask_hr: np.ndarray   # union of the part masks


def background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered background: gradient, coloured fractal noise and distractor shapes."""
    c0, c1 = rng.uniform(0.15, 0.95, 3), rng.uniform(0.15, 0.95, 3)
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1)
    t = np.clip((xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a) + 0.5, 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    img = img + 0.18 * np.stack([fractal_noise(rng) for _ in range(3)], -1) * rng.uniform(0.3, 1.0)
    if rng.random() < 0.5:  # a horizon / table edge
        y0 = rng.uniform(0.55, 0.85) * IMAGE_SIZE
        ground = rng.uniform(0.2, 0.8, 3)
        sel = (yy * (IMAGE_SIZE - 1) > y0 + (xx - 0.5) * rng.uniform(-20, 20))[..., None]
        img = np.where(sel, 0.5 * img + 0.5 * ground, img)
    # distractors share a few textures (texturing each one separately costs more than it shows)
    textures = [texture(TEXTURES[int(rng.integers(0, len(TEXTURES)))], rng) for _ in range(3)]
    for _ in range(int(rng.integers(5, 14))):
        col = rng.uniform(0, 1, 3)
        alpha = rng.uniform(0.35, 0.9)
        kind = rng.integers(0, 3)
        c = rng.uniform(-20, IMAGE_SIZE + 20, 2)
        canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        if kind == 0:
            ax = tuple(int(v) for v in rng.uniform(6, 45, 2))
            cv2.ellipse(canvas, (int(c[0]), int(c[1])), ax, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
        elif kind == 1:
            n = int(rng.integers(3, 7))
            pts = c + rng.uniform(-40, 40, (n, 2))
            cv2.fillPoly(canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 255, cv2.LINE_AA)
        else:
            d = rng.uniform(-120, 120, 2)
            cv2.line(canvas, tuple(int(v) for v in c), tuple(int(v) for v in c + d), 255,
                     int(rng.integers(2, 10)), cv2.LINE_AA)
        m = (canvas.astype(np.float32) / 255.0)[..., None] * alpha
        tex = textures[int(rng.integers(0, len(textures)))][..., None]
        img = img * (1 - m) + m * np.clip(col * (1 + 0.25 * tex), 0, 1)
    return img.astype(np.float32)


def render_photo(obj, rng: np.random.Generator) -> PhotoLayers:
    """Render a posed :class:`~psc6k.synth.shapes.SynthObject` over a cluttered background."""
    img = background(rng)
    light = rng.uniform(0, 2 * np.pi)
    light_dir = np.array([np.cos(light), np.sin(light)])
    yy, xx = _YY, _XX
    masks_hr = []
    union = np.zeros((IMAGE_SIZE * SS, IMAGE_SIZE * SS), np.uint8)
    # drop shadow under the object
    shadow_off = rng.uniform(2, 6, 2)
    for k, part in enumerate(obj.parts):
        hr = polygon_mask_hr(part.polygon)
        masks_hr.append(hr)
        union |= hr
    shadow = cv2.GaussianBlur(downsample(union), (0, 0), 3.0)
    shadow = np.roll(shadow, (int(shadow_off[1]), int(shadow_off[0])), (0, 1))
    img = img * (1 - 0.35 * shadow[..., None])
    for k, (part, hr) in enumerate(zip(obj.parts, masks_hr)):
        alpha_full = downsample(hr)
        base = part.color if part.color is not None else obj.palette[k % len(obj.palette)]
        base = np.clip(np.asarray(base) * rng.uniform(0.85, 1.15, 3), 0.03, 1.0)
        kind = part.texture or TEXTURES[int(rng.integers(0, len(TEXTURES)))]
        tex_full = texture(kind, rng)
        rows, cols = np.nonzero(alpha_full > 0)
        if not len(rows):
            continue
        # work on the part's bounding box only
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        alpha, tex = alpha_full[y0:y1, x0:x1], tex_full[y0:y1, x0:x1]
        binary = alpha > 0.5
        dist = cv2.distanceTransform(np.pad(binary, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        shade = 0.55 + 0.45 * np.sqrt(dist / (dist.max() + 1e-6))
        ys, xs = np.nonzero(binary) if binary.any() else (rows - y0, cols - x0)
        cx, cy = xs.mean(), ys.mean()
        ext = max(np.ptp(xs), np.ptp(ys), 8)
        lit = 1.0 - 0.35 * ((xx[y0:y1, x0:x1] - x0 - cx) * light_dir[0] + (yy[y0:y1, x0:x1] - y0 - cy) * light_dir[1]) / ext
        colour = base[None, None, :] * (1 + 0.2 * tex[..., None]) * (shade * lit)[..., None]
        a = alpha[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + np.clip(colour, 0, 1) * a
    img = img + rng.normal(0, 0.015, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    photo = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return PhotoLayers(photo, masks_hr, union)


# ------------------------------------------------------------------------------ sketch lines
@dataclass
class Stroke:
    points: np.ndarray   # [N, 2] photo pixels (before warping) or sketch pixels (after)
    width: np.ndarray    # [N] pixels


def _hr_to_px(contour: np.ndarray) -> np.ndarray:
    return (contour.reshape(-1, 2).astype(np.float64) + 0.5) / SS - 0.5


def resample(points: np.ndarray, spacing: float, closed: bool = False) -> np.ndarray:
    """Points every ``spacing`` px along a polyline (closed: back to the start)."""
    pts = np.asarray(points, float)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] < spacing:
        return pts[[0, -1]] if len(pts) > 1 else pts
    t = np.arange(0, s[-1], spacing)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], -1)


@dataclass
class Outline:
    """Drawable boundaries of a photo's object, computed once per photo (see :func:`outlines`)."""

    contours: list       # [N, 2] closed outer contours (photo pixels)
    parts: list          # per part: (role, points [N, 2] along its closed outline, visible bool [N])


def outlines(layers: PhotoLayers, obj) -> Outline:
    """Outer contour of the object and, per part, which outline points are visible inner boundaries.

    A part's outline point is an inner boundary when no later-drawn part covers it and it is not
    on the object's silhouette (at least 2.5 px inside the object).
    """
    contours = []
    found, _ = cv2.findContours(layers.object_mask_hr, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for c in found:
        if cv2.contourArea(c) < (6 * SS) ** 2:
            continue
        pts = resample(_hr_to_px(c), 1.5, closed=True)
        k = 5  # smooth away the staircase of the raster contour (circular moving average)
        pad = np.vstack([pts[-k:], pts, pts[:k]])
        ker = np.ones(2 * k + 1) / (2 * k + 1)
        contours.append(np.stack([np.convolve(pad[:, 0], ker, "valid"), np.convolve(pad[:, 1], ker, "valid")], -1))
    union_lr = (downsample(layers.object_mask_hr) > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(union_lr, cv2.DIST_L2, 5)
    n = len(obj.parts)
    above = np.zeros_like(layers.object_mask_hr)
    above_list = [None] * n
    for k in range(n - 1, -1, -1):  # union of the parts drawn after part k
        above_list[k] = above.copy()
        above |= layers.part_masks_hr[k]
    parts = []
    for k, part in enumerate(obj.parts):
        pts = resample(part.polygon, 1.0, closed=True)
        ij = np.clip(np.round((pts + 0.5) * SS - 0.5).astype(int), 0, IMAGE_SIZE * SS - 1)
        hidden = above_list[k][ij[:, 1], ij[:, 0]] > 0
        ij1 = np.clip(np.round(pts).astype(int), 0, IMAGE_SIZE - 1)
        on_outline = depth[ij1[:, 1], ij1[:, 0]] < 2.5
        parts.append((part.role, pts, ~hidden & ~on_outline))
    return Outline(contours, parts)


def object_lines(outline: Outline, rng: np.random.Generator, *, detail_p=0.55, body_p=0.85) -> list:
    """Polylines (photo pixels) one person draws: outer contour + a random subset of inner boundaries.

    Returns a list of ``(points [N, 2], closed)``.
    """
    lines = [(c, True) for c in outline.contours]
    for role, pts, vis in outline.parts:
        keep_p = detail_p if role == "detail" else body_p
        if rng.random() > keep_p or not vis.any():
            continue
        if vis.all():
            lines.append((pts, True))
            continue
        start = int(np.flatnonzero(~vis)[0])  # runs of visible points, read circularly
        order = np.roll(np.arange(len(pts)), -start)
        run = []
        for i in order:
            if vis[i]:
                run.append(i)
            elif run:
                if len(run) >= 6:
                    lines.append((pts[run], False))
                run = []
        if len(run) >= 6:
            lines.append((pts[run], False))
    return lines


def _smooth_noise(rng, n: int, amplitude: float, corr: float) -> np.ndarray:
    """1-D smooth noise of length ``n`` (correlation length ``corr`` samples)."""
    if n <= 1:
        return np.zeros(n)
    m = max(2, int(n / max(corr, 1)) + 2)
    knots = rng.normal(0, amplitude, m)
    return np.interp(np.linspace(0, m - 1, n), np.arange(m), knots)


def humanize(lines, rng: np.random.Generator, *, pen: float, gap_p: float = 0.3, omit_p: float = 0.06) -> list:
    """Split polylines into wobbly strokes with gaps, overlaps, overshoots and varying width.

    ``gap_p``: probability of a small gap after a stroke (else it overlaps the next one);
    ``omit_p``: probability that a stroke is left out.
    """
    strokes = []
    step = 2.0
    for pts, closed in lines:
        pts = resample(pts, step, closed=closed)
        if len(pts) < 3:
            continue
        if closed:  # start anywhere on a closed contour
            pts = np.roll(pts, -int(rng.integers(0, len(pts))), axis=0)
            pts = np.vstack([pts, pts[:1]])
        i = 0
        n = len(pts)
        while i < n - 2:
            length = int(rng.uniform(18, 70))  # 36-140 px
            j = min(n, i + length)
            if n - j < 6:
                j = n
            seg = pts[i:j]
            if rng.random() >= omit_p and len(seg) >= 3:  # some strokes are simply left out
                strokes.append(_one_stroke(seg, rng, pen))
            if rng.random() < gap_p:
                i = j + int(rng.integers(1, 4))       # gap
            else:
                i = max(i + 1, j - int(rng.integers(0, 3)))  # overlap the next stroke a little
    return strokes


def _one_stroke(seg: np.ndarray, rng, pen: float) -> Stroke:
    d = np.gradient(seg, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    nrm = np.stack([-d[:, 1], d[:, 0]], -1)
    n = len(seg)
    wob = _smooth_noise(rng, n, rng.uniform(0.3, 1.1), rng.uniform(5, 15)) + rng.normal(0, 0.4)
    pts = seg + nrm * wob[:, None]
    if rng.random() < 0.45:  # overshoot at one end
        k = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            pts = np.vstack([pts, pts[-1] + d[-1] * 2.0 * np.arange(1, k + 1)[:, None]])
        else:
            pts = np.vstack([pts[0] - d[0] * 2.0 * np.arange(k, 0, -1)[:, None], pts])
    n = len(pts)
    t = np.linspace(0, 1, n)
    taper = np.clip(np.minimum(t, 1 - t) * n / 4, 0.45, 1.0)
    width = pen * rng.uniform(0.8, 1.2) * taper * (1 + _smooth_noise(rng, n, 0.12, 10))
    return Stroke(pts, np.maximum(width, 0.5))


def extra_strokes(obj, rng: np.random.Generator, *, pen: float) -> list:
    """A few strokes that are not object boundaries: hatching, a ground line, a stray curl."""
    out = []
    allpts = np.vstack([p.polygon for p in obj.parts])
    lo, hi = allpts.min(0), allpts.max(0)
    for _ in range(int(rng.integers(0, 3))):
        kind = rng.integers(0, 3)
        if kind == 0:  # hatching inside a random part
            part = obj.parts[int(rng.integers(0, len(obj.parts)))]
            c = part.polygon.mean(0)
            a = rng.uniform(0, np.pi)
            d, nrm = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            for h in range(int(rng.integers(2, 5))):
                p0 = c + nrm * (h - 1.5) * 4 - d * 5
                out.append(_one_stroke(np.linspace(p0, p0 + d * 10, 6), rng, pen * 0.7))
        elif kind == 1:  # ground line
            y = hi[1] + rng.uniform(1, 5)
            seg = np.linspace([lo[0] - rng.uniform(0, 15), y], [hi[0] + rng.uniform(0, 15), y + rng.uniform(-3, 3)], 20)
            out.append(_one_stroke(seg, rng, pen))
        else:  # a stray curl near the object
            c = lo + rng.uniform(0, 1, 2) * (hi - lo)
            t = np.linspace(0, rng.uniform(2, 5), 15)
            seg = c + np.stack([np.cos(t), np.sin(t)], -1) * rng.uniform(3, 8)
            out.append(_one_stroke(seg, rng, pen * 0.8))
    return out


def warp_strokes(strokes: list, warp) -> list:
    """Photo-frame strokes -> sketch frame, through the inverse of the sketch -> photo warp."""
    if not strokes:
        return []
    # drawing needs no 1e-7 px precision (the ground truth is the warp itself), 0.01 px will do
    pts = warp.inverse(np.vstack([s.points for s in strokes]), tol=1e-2)
    out, i = [], 0
    for s in strokes:
        out.append(Stroke(pts[i:i + len(s.points)], s.width))
        i += len(s.points)
    return out


def draw_strokes(strokes: list, rng: np.random.Generator, ink: float | None = None) -> np.ndarray:
    """Anti-aliased strokes on white paper, uint8 RGB [256, 256, 3]."""
    canvas = np.full((IMAGE_SIZE * SS, IMAGE_SIZE * SS), 255, np.uint8)
    ink = float(rng.uniform(0, 45)) if ink is None else ink
    for s in strokes:
        fx = _to_fixed(s.points)
        for k in range(len(fx) - 1):
            th = int(max(1, round((s.width[k] + s.width[k + 1]) / 2 * SS)))
            cv2.line(canvas, (int(fx[k, 0]), int(fx[k, 1])), (int(fx[k + 1, 0]), int(fx[k + 1, 1])),
                     int(ink), th, cv2.LINE_AA, _SHIFT)
    small = cv2.resize(canvas, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return np.repeat(small[..., None], 3, axis=2)


def scribble_strokes(rng: np.random.Generator, pen: float) -> list:
    """Random chaotic strokes all over the page (a deliberately broken sketch)."""
    out = []
    for _ in range(int(rng.integers(3, 8))):
        c = rng.uniform(30, 226, 2)
        walk = c + np.cumsum(rng.normal(0, 9, (40, 2)), axis=0)
        out.append(_one_stroke(np.clip(walk, 3, 252), rng, pen))
    return out
