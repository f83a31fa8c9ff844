"""Procedural object categories: part layouts built from ellipses, polygons and thick curves.

A category is a function ``build(p) -> list[Part]`` drawing one object instance in canonical
units (the object spans roughly [-1, 1] x [-1, 1], y pointing down). ``p`` is a :class:`Params`
that draws every proportion around a category-level value (fixed per category, so instances look
alike) with per-instance jitter, plus articulation angles. :func:`make_object` then poses the
instance (scale, rotation, mirror, position) into 256 x 256 photo pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from psc6k import IMAGE_SIZE


@dataclass
class Part:
    """One part of an object, drawn in list order (later parts on top).

    Attributes
    ----------
    name : str
    polygon : float64 [N, 2]
        Closed outline (x, y); canonical units in a builder, photo pixels after :func:`make_object`.
    role : {"body", "limb", "detail"}
        Sketch strokes use it: details (eyes, spots) are drawn less often than body parts.
    color : float [3] or None
        RGB in [0, 1]; None picks one from the category palette.
    """

    name: str
    polygon: np.ndarray
    role: str = "body"
    color: np.ndarray | None = None
    texture: str | None = None
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ primitives
def ellipse(cx, cy, rx, ry, angle=0.0, n=48, start=0.0, stop=2 * np.pi) -> np.ndarray:
    """Polygon of an ellipse (or an arc of it, closed by its chord), ``angle`` in radians."""
    t = np.linspace(start, stop, n, endpoint=(stop - start) < 2 * np.pi - 1e-9)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], -1)
    return rotate(pts, angle) + [cx, cy]


def rect(cx, cy, w, h, angle=0.0, round_=0.0, n_corner=6) -> np.ndarray:
    """Polygon of a (rounded) rectangle centred on (cx, cy)."""
    r = min(round_, w / 2, h / 2)
    if r <= 0:
        pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    else:
        pts = []
        for (sx, sy), a0 in zip([(1, -1), (1, 1), (-1, 1), (-1, -1)], [-np.pi / 2, 0, np.pi / 2, np.pi]):
            c = np.array([sx * (w / 2 - r), sy * (h / 2 - r)])
            t = np.linspace(a0, a0 + np.pi / 2, n_corner)
            pts.extend(c + r * np.stack([np.cos(t), np.sin(t)], -1))
        pts = np.array(pts)
    return rotate(pts, angle) + [cx, cy]


def trapezoid(cx, cy, w_top, w_bottom, h, angle=0.0) -> np.ndarray:
    pts = np.array([[-w_top / 2, -h / 2], [w_top / 2, -h / 2], [w_bottom / 2, h / 2], [-w_bottom / 2, h / 2]])
    return rotate(pts, angle) + [cx, cy]


def regular(cx, cy, r, n, angle=0.0, inner=None) -> np.ndarray:
    """Regular polygon, or a star when ``inner`` (inner radius) is given."""
    if inner is None:
        t = angle + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1)
    t = angle + np.arange(2 * n) * np.pi / n
    rr = np.where(np.arange(2 * n) % 2 == 0, r, inner)
    return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], -1)


def bezier(ctrl, n=24) -> np.ndarray:
    """Points of a Bezier curve of any degree through control points ``ctrl`` [K, 2]."""
    ctrl = np.asarray(ctrl, float)
    t = np.linspace(0, 1, n)[:, None, None]
    p = np.broadcast_to(ctrl, (n,) + ctrl.shape)
    while p.shape[1] > 1:  # de Casteljau, all parameters at once
        p = (1 - t) * p[:, :-1] + t * p[:, 1:]
    return p[:, 0]


def tube(path, w0, w1=None, n=24) -> np.ndarray:
    """Polygon of a thick curve along ``path`` (Bezier control points), width ``w0`` -> ``w1``."""
    w1 = w0 if w1 is None else w1
    c = bezier(path, n) if len(path) > 2 else np.linspace(path[0], path[-1], n)
    d = np.gradient(c, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    nrm = np.stack([-d[:, 1], d[:, 0]], -1)
    w = np.linspace(w0, w1, n)[:, None] / 2
    left, right = c + nrm * w, c - nrm * w
    # round caps
    cap1 = c[-1] + rotate(nrm[-1:] * w[-1], -np.linspace(0, np.pi, 7)[1:-1, None])
    cap0 = c[0] + rotate(-nrm[:1] * w[0], -np.linspace(0, np.pi, 7)[1:-1, None])
    return np.vstack([left, cap1.reshape(-1, 2), right[::-1], cap0.reshape(-1, 2)])


def rotate(pts, angle, pivot=(0.0, 0.0)) -> np.ndarray:
    """Rotate points [N, 2] by ``angle`` (radians; scalar or [N, 1]) about ``pivot``."""
    pts = np.asarray(pts, float) - pivot
    c, s = np.cos(angle), np.sin(angle)
    x, y = pts[..., 0:1], pts[..., 1:2]
    return np.concatenate([c * x - s * y, s * x + c * y], -1) + pivot


def mirror_x(pts) -> np.ndarray:
    pts = np.array(pts, float)
    pts[:, 0] *= -1
    return pts[::-1]


# ------------------------------------------------------------------------------ parameters
class Params:
    """Random proportions: category-level centre (from ``style``) with per-instance jitter."""

    def __init__(self, style: np.random.Generator, rng: np.random.Generator, jitter: float = 0.18):
        self.style, self.rng, self.jitter = style, rng, jitter

    def v(self, lo: float, hi: float) -> float:
        """A proportion in about [lo, hi]: the category fixes a centre, each instance jitters."""
        centre = self.style.uniform(lo, hi)
        return float(centre + self.rng.uniform(-1, 1) * self.jitter * (hi - lo))

    def angle(self, deg: float) -> float:
        """An articulation angle, uniform in +-``deg`` degrees, in radians."""
        return float(np.deg2rad(self.rng.uniform(-deg, deg)))

    def choice(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def count(self, lo: int, hi: int) -> int:
        """A category-level count in [lo, hi] (instances of a category agree on it)."""
        return int(self.style.integers(lo, hi + 1))


# ------------------------------------------------------------------------------ categories
def snowman(p: Params):
    r1, r2, r3 = p.v(0.40, 0.48), p.v(0.28, 0.34), p.v(0.19, 0.24)
    y1 = 1 - r1
    y2 = y1 - r1 - r2 * 0.7
    y3 = y2 - r2 - r3 * 0.7
    parts = [Part("bottom", ellipse(0, y1, r1, r1 * p.v(0.9, 1.0))),
             Part("middle", ellipse(0, y2, r2, r2 * p.v(0.9, 1.0)))]
    for side in (-1, 1):
        a = p.angle(35) + side * 0.3
        base = np.array([side * r2 * 0.8, y2 - r2 * 0.2])
        tip = base + rotate(np.array([[side * 0.55, -0.15]]), a)[0]
        mid = (base + tip) / 2 + [0, -0.08]
        parts.append(Part(f"arm{side}", tube([base, mid, tip], 0.07, 0.03), role="limb"))
    parts.append(Part("head", ellipse(0, y3, r3, r3)))
    hat_w = r3 * p.v(1.3, 1.7)
    parts.append(Part("brim", rect(0, y3 - r3 * 0.8, hat_w * 1.5, 0.06, round_=0.02)))
    parts.append(Part("hat", rect(0, y3 - r3 * 0.8 - p.v(0.18, 0.28) / 2, hat_w, p.v(0.18, 0.28), round_=0.02)))
    parts.append(Part("nose", np.array([[0, y3 - 0.03], [p.v(0.18, 0.3), y3 + 0.01], [0, y3 + 0.05]]), role="detail"))
    for side in (-1, 1):
        parts.append(Part(f"eye{side}", ellipse(side * r3 * 0.4, y3 - r3 * 0.3, 0.03, 0.03, n=12), role="detail"))
    return parts


def mushroom(p: Params):
    cap_w, cap_h = p.v(0.8, 1.0), p.v(0.35, 0.6)
    stem_w, stem_h = p.v(0.22, 0.36), p.v(0.6, 0.9)
    tilt = p.angle(12)
    top = 1 - stem_h
    parts = [Part("stem", trapezoid(0, 1 - stem_h / 2, stem_w * 0.8, stem_w, stem_h))]
    cap = ellipse(0, top, cap_w, cap_h, start=np.pi, stop=2 * np.pi, n=40)
    cap = np.vstack([cap, bezier([[cap_w, top], [0, top + cap_h * 0.3], [-cap_w, top]], 12)[1:-1]])
    parts.append(Part("cap", rotate(cap, tilt, (0, top))))
    for i in range(p.count(2, 4)):
        sx = p.rng.uniform(-0.6, 0.6) * cap_w
        sy = top - p.rng.uniform(0.25, 0.6) * cap_h
        parts.append(Part(f"spot{i}", rotate(ellipse(sx, sy, 0.08, 0.06, n=14), tilt, (0, top)), role="detail"))
    if p.choice(0.5):
        parts.append(Part("grass", tube([[-0.9, 0.98], [0, 0.9], [0.9, 0.98]], 0.05), role="detail"))
    return parts


def lamp(p: Params):
    base = np.array([0.0, 0.9])
    parts = [Part("base", ellipse(0, 0.92, p.v(0.35, 0.5), 0.09))]
    a1 = -np.pi / 2 + p.angle(30)
    l1, l2 = p.v(0.7, 0.9), p.v(0.55, 0.75)
    j1 = base + l1 * np.array([np.cos(a1), np.sin(a1)])
    a2 = a1 + np.deg2rad(p.rng.uniform(60, 120))
    j2 = j1 + l2 * np.array([np.cos(a2), np.sin(a2)])
    parts.append(Part("arm1", tube([base, j1], 0.07), role="limb"))
    parts.append(Part("arm2", tube([j1, j2], 0.06), role="limb"))
    parts.append(Part("joint", ellipse(*j1, 0.06, 0.06, n=16), role="detail"))
    shade_angle = a2 + np.pi / 2 + p.angle(25)
    sw, sh = p.v(0.35, 0.5), p.v(0.3, 0.42)
    shade = trapezoid(0, sh / 2, sw * 0.35, sw * 1.4, sh)
    parts.append(Part("shade", rotate(shade, shade_angle - np.pi / 2 * 0, (0, 0)) + j2))
    return parts


def tree(p: Params):
    tw, th = p.v(0.14, 0.24), p.v(0.6, 0.9)
    parts = [Part("trunk", trapezoid(p.angle(5), 1 - th / 2, tw * 0.7, tw * 1.3, th))]
    for side in (-1, 1):
        if p.choice(0.7):
            y = 1 - th * p.rng.uniform(0.5, 0.8)
            parts.append(Part(f"branch{side}", tube([[0, y], [side * 0.25, y - 0.12], [side * 0.45, y - 0.3 + p.angle(10)]],
                                                    0.07, 0.02), role="limb"))
    n = p.count(2, 4)
    top = 1 - th
    for i in range(n):
        cx = (i - (n - 1) / 2) * p.v(0.35, 0.5) + p.rng.uniform(-0.05, 0.05)
        cy = top - p.v(0.3, 0.5) - (0.25 if i == n // 2 else 0) * p.rng.uniform(0.5, 1.2)
        parts.append(Part(f"crown{i}", ellipse(cx, cy, p.v(0.35, 0.5), p.v(0.3, 0.45), p.angle(20))))
    return parts


def fish(p: Params):
    bl, bh = p.v(0.75, 0.95), p.v(0.3, 0.5)
    parts = []
    ta = p.angle(20)
    tail = np.array([[bl * 0.85, 0], [bl + p.v(0.25, 0.4), -p.v(0.3, 0.45)], [bl + p.v(0.15, 0.3), 0], [bl + p.v(0.25, 0.4), p.v(0.3, 0.45)]])
    parts.append(Part("tail", rotate(tail, ta, (bl * 0.85, 0)) - [0.15, 0]))
    parts.append(Part("dorsal", np.array([[-0.3, -bh * 0.8], [0.0, -bh - p.v(0.2, 0.35)], [0.35, -bh * 0.7]]) - [0.15, 0]))
    parts.append(Part("body", ellipse(-0.15, 0, bl, bh, n=56)))
    fa = p.angle(25)
    parts.append(Part("fin", rotate(ellipse(0.12, 0.08, 0.2, 0.07), fa + 0.5, (-0.05, 0.05)) - [0.15, 0], role="limb"))
    parts.append(Part("eye", ellipse(-bl * 0.65 - 0.15, -bh * 0.2, 0.06, 0.06, n=16), role="detail"))
    parts.append(Part("gill", tube([[-bl * 0.35 - 0.15, -bh * 0.5], [-bl * 0.25 - 0.15, 0], [-bl * 0.35 - 0.15, bh * 0.5]], 0.03), role="detail"))
    return parts


def butterfly(p: Params):
    open_ = p.angle(15)
    uw, uh, lw, lh = p.v(0.55, 0.75), p.v(0.4, 0.55), p.v(0.35, 0.5), p.v(0.3, 0.42)
    parts = []
    for side in (-1, 1):
        up = ellipse(side * uw * 0.75, -0.25, uw * 0.8, uh, side * (-0.4 + open_))
        lo = ellipse(side * lw * 0.7, 0.35, lw * 0.75, lh, side * (0.5 + open_))
        parts.append(Part(f"upper{side}", up))
        parts.append(Part(f"lower{side}", lo))
        parts.append(Part(f"spot{side}", ellipse(side * uw * 0.85, -0.3, 0.1, 0.08, n=16), role="detail"))
        parts.append(Part(f"antenna{side}", tube([[side * 0.03, -0.55], [side * 0.12, -0.8], [side * 0.3 + p.angle(5), -0.95]], 0.025),
                          role="detail"))
    parts.append(Part("body", ellipse(0, 0.0, 0.07, p.v(0.5, 0.65), n=32)))
    return parts


def robot(p: Params):
    tw, th = p.v(0.6, 0.8), p.v(0.55, 0.75)
    hw, hh = p.v(0.35, 0.5), p.v(0.3, 0.4)
    ty = 0.05
    parts = []
    for side in (-1, 1):
        hip = np.array([side * tw * 0.25, ty + th / 2])
        ll = p.v(0.35, 0.45)
        la = p.angle(15)
        foot = hip + rotate(np.array([[0, ll]]), la)[0]
        parts.append(Part(f"leg{side}", tube([hip, foot], 0.13), role="limb"))
        parts.append(Part(f"foot{side}", rect(foot[0] + side * 0.05, foot[1] + 0.03, 0.25, 0.1, round_=0.03), role="limb"))
    parts.append(Part("torso", rect(0, ty, tw, th, round_=0.06)))
    for side in (-1, 1):
        sh = np.array([side * tw / 2, ty - th * 0.35])
        a1 = np.pi / 2 - side * (0.3 + p.angle(40))
        el = sh + p.v(0.3, 0.4) * np.array([np.cos(a1) * side * 0.6 + side * 0.2, np.sin(a1)])
        a2 = a1 - side * p.angle(60)
        hand = el + p.v(0.28, 0.36) * np.array([np.cos(a2) * side * 0.5, np.sin(a2)])
        parts.append(Part(f"upperarm{side}", tube([sh, el], 0.1), role="limb"))
        parts.append(Part(f"forearm{side}", tube([el, hand], 0.09), role="limb"))
        parts.append(Part(f"hand{side}", ellipse(*hand, 0.07, 0.07, n=16), role="limb"))
    hy = ty - th / 2 - hh / 2 + 0.01
    parts.append(Part("head", rect(0, hy, hw, hh, p.angle(8), round_=0.04)))
    parts.append(Part("antenna", tube([[0, hy - hh / 2], [p.angle(8), hy - hh / 2 - 0.18]], 0.03), role="detail"))
    parts.append(Part("bulb", ellipse(0, hy - hh / 2 - 0.2, 0.05, 0.05, n=14), role="detail"))
    for side in (-1, 1):
        parts.append(Part(f"eye{side}", ellipse(side * hw * 0.22, hy - 0.03, 0.05, 0.04, n=14), role="detail"))
    parts.append(Part("panel", rect(0, ty, tw * 0.5, th * 0.35, round_=0.02), role="detail"))
    return parts


def bird(p: Params):
    bl, bh = p.v(0.55, 0.7), p.v(0.32, 0.42)
    parts = []
    for side in (-1, 1):
        x = side * 0.12
        la = p.angle(15)
        parts.append(Part(f"leg{side}", tube([[x, 0.25], [x + la * 0.3, 0.65], [x + 0.12 + la * 0.3, 0.72]], 0.035), role="limb"))
    tail_a = p.angle(20)
    parts.append(Part("tail", rotate(np.array([[bl * 0.7, -0.05], [bl + p.v(0.35, 0.5), -0.25], [bl + p.v(0.35, 0.5), 0.05], [bl * 0.7, 0.1]]),
                                     tail_a, (bl * 0.7, 0))))
    parts.append(Part("body", ellipse(0, 0, bl, bh, p.angle(10))))
    hr = p.v(0.2, 0.27)
    neck = p.angle(20)
    hc = rotate(np.array([[-bl * 0.85, -bh * 0.9]]), neck, (-bl * 0.5, 0))[0]
    parts.append(Part("head", ellipse(*hc, hr, hr * 0.95)))
    bk = p.v(0.2, 0.32)
    parts.append(Part("beak", np.array([[hc[0] - hr * 0.8, hc[1] - 0.06], [hc[0] - hr - bk, hc[1] + 0.02], [hc[0] - hr * 0.8, hc[1] + 0.08]]),
                      role="detail"))
    parts.append(Part("eye", ellipse(hc[0] - hr * 0.3, hc[1] - hr * 0.25, 0.04, 0.04, n=12), role="detail"))
    wa = p.angle(25)
    parts.append(Part("wing", rotate(ellipse(0.1, -0.02, bl * 0.6, bh * 0.5, 0.15), wa, (-0.2, -0.05)), role="limb"))
    return parts


def cup(p: Params):
    bw, bh = p.v(0.75, 1.0), p.v(0.8, 1.1)
    cy = 0.9 - bh / 2 - 0.05
    parts = [Part("saucer", ellipse(0, 0.9, bw * p.v(0.8, 1.0), 0.1))]
    side = 1
    hw = p.v(0.3, 0.45)
    handle = tube([[side * bw * 0.38, cy - bh * 0.3], [side * (bw * 0.5 + hw), cy - bh * 0.35],
                   [side * (bw * 0.5 + hw), cy + bh * 0.25], [side * bw * 0.34, cy + bh * 0.2]], 0.08, n=28)
    parts.append(Part("handle", handle, role="limb"))
    parts.append(Part("body", trapezoid(0, cy, bw, bw * p.v(0.6, 0.8), bh)))
    parts.append(Part("rim", ellipse(0, cy - bh / 2, bw / 2, 0.07), role="detail"))
    if p.choice(0.6):
        parts.append(Part("steam", tube([[0, cy - bh / 2 - 0.1], [0.15, cy - bh / 2 - 0.3], [-0.1, cy - bh / 2 - 0.45],
                                          [0.05, cy - bh / 2 - 0.65]], 0.035), role="detail"))
    return parts


def house(p: Params):
    ww, wh = p.v(1.1, 1.5), p.v(0.7, 1.0)
    wy = 0.95 - wh / 2
    rh = p.v(0.45, 0.7)
    parts = []
    cx = ww * p.v(0.2, 0.32)
    parts.append(Part("chimney", rect(cx, wy - wh / 2 - rh * 0.55, 0.14, rh * 0.8)))
    parts.append(Part("walls", rect(0, wy, ww, wh)))
    ov = p.v(0.05, 0.15)
    parts.append(Part("roof", np.array([[-ww / 2 - ov, wy - wh / 2 + 0.02], [p.angle(6), wy - wh / 2 - rh], [ww / 2 + ov, wy - wh / 2 + 0.02]])))
    dx = p.rng.uniform(-0.25, 0.25) * ww
    dh = wh * p.v(0.45, 0.6)
    parts.append(Part("door", rect(dx, 0.95 - dh / 2, 0.22, dh), role="detail"))
    for i, sx in enumerate((-1, 1)):
        wx = sx * ww * 0.32
        if abs(wx - dx) > 0.25:
            parts.append(Part(f"window{i}", rect(wx, wy - wh * 0.12, 0.2, 0.18), role="detail"))
    return parts


def kite(p: Params):
    w, h = p.v(0.55, 0.75), p.v(0.8, 1.0)
    tilt = p.angle(25)
    top = -0.95 + 0.0
    kite_poly = np.array([[0, top], [w, top + h * 0.4], [0, top + h], [-w, top + h * 0.4]])
    parts = [Part("kite", rotate(kite_poly, tilt, (0, top + h / 2)))]
    tail_start = rotate(np.array([[0, top + h]]), tilt, (0, top + h / 2))[0]
    sway = p.angle(30)
    ctrl = [tail_start, tail_start + [0.3 + sway, 0.35], tail_start + [-0.2 + sway, 0.6], tail_start + [0.1 + sway * 1.5, 0.9]]
    parts.append(Part("tail", tube(ctrl, 0.03, n=30), role="limb"))
    pts = bezier(ctrl, 5)[1:-1]
    for i, c in enumerate(pts):
        parts.append(Part(f"bow{i}", np.array([c + [-0.1, -0.07], c + [0.1, 0.07], c + [0.1, -0.07], c + [-0.1, 0.07]]), role="detail"))
    parts.append(Part("spar", rotate(tube([[0, top + 0.02], [0, top + h - 0.02]], 0.03), tilt, (0, top + h / 2)), role="detail"))
    return parts


def flower(p: Params):
    stem_bend = p.angle(20)
    head = np.array([stem_bend * 0.8, -0.35])
    parts = [Part("stem", tube([[0, 1.0], [stem_bend * 0.3, 0.4], head], 0.06), role="limb")]
    for side in (-1, 1):
        if p.choice(0.8):
            base = np.array([stem_bend * 0.2, 0.55 + p.rng.uniform(-0.1, 0.1)])
            parts.append(Part(f"leaf{side}", ellipse(base[0] + side * 0.22, base[1], 0.25, 0.08, side * 0.5 + p.angle(15))))
    n = p.count(5, 8)
    pl, pw = p.v(0.3, 0.45), p.v(0.1, 0.17)
    rot0 = p.rng.uniform(0, np.pi)
    for i in range(n):
        a = rot0 + i * 2 * np.pi / n
        parts.append(Part(f"petal{i}", ellipse(head[0] + np.cos(a) * pl * 0.8, head[1] + np.sin(a) * pl * 0.8, pl * 0.7, pw, a)))
    parts.append(Part("centre", ellipse(*head, p.v(0.13, 0.2), p.v(0.13, 0.2), n=24)))
    return parts


def car(p: Params):
    bl, bh = p.v(1.7, 1.95), p.v(0.32, 0.42)
    y = 0.35
    cab_w, cab_h = bl * p.v(0.45, 0.6), p.v(0.3, 0.42)
    cab_x = p.rng.uniform(-0.15, 0.1)
    cab = trapezoid(cab_x, y - bh / 2 - cab_h / 2 + 0.02, cab_w * p.v(0.6, 0.8), cab_w, cab_h)
    parts = [Part("cabin", cab), Part("body", rect(0, y, bl, bh, round_=0.08))]
    parts.append(Part("window", trapezoid(cab_x, y - bh / 2 - cab_h / 2 + 0.04, cab_w * 0.5, cab_w * 0.75, cab_h * 0.6), role="detail"))
    wr = p.v(0.17, 0.23)
    for i, sx in enumerate((-1, 1)):
        parts.append(Part(f"wheel{i}", ellipse(sx * bl * 0.3, y + bh / 2, wr, wr, n=32)))
        parts.append(Part(f"hub{i}", ellipse(sx * bl * 0.3, y + bh / 2, wr * 0.4, wr * 0.4, n=16), role="detail"))
    parts.append(Part("light", ellipse(-bl / 2 + 0.06, y - 0.05, 0.05, 0.04, n=12), role="detail"))
    return parts


def guitar(p: Params):
    lr, ur = p.v(0.38, 0.45), p.v(0.28, 0.34)
    nl = p.v(0.7, 0.9)
    ly = 0.95 - lr
    uy = ly - lr - ur * 0.6
    parts = [Part("neck", rect(0, uy - ur - nl / 2 + 0.1, 0.12, nl + 0.2))]
    parts.append(Part("head", trapezoid(0, uy - ur - nl - 0.02, 0.2, 0.14, 0.2)))
    parts.append(Part("lower", ellipse(0, ly, lr, lr * 0.95)))
    parts.append(Part("upper", ellipse(0, uy, ur, ur * 0.9)))
    parts.append(Part("hole", ellipse(0, uy + ur * 0.35, 0.1, 0.1, n=20), role="detail"))
    parts.append(Part("bridge", rect(0, ly + lr * 0.3, 0.25, 0.05), role="detail"))
    return parts


def turtle(p: Params):
    sl, sh = p.v(0.7, 0.85), p.v(0.45, 0.6)
    parts = []
    for i, (sx, sy) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
        a = p.angle(30)
        base = np.array([sx * sl * 0.6, sy * sh * 0.6])
        parts.append(Part(f"leg{i}", ellipse(*(base + rotate(np.array([[sx * 0.15, sy * 0.15]]), a)[0]), 0.2, 0.1,
                                              np.arctan2(sy, sx) + a), role="limb"))
    parts.append(Part("tail", np.array([[sl * 0.85, -0.06], [sl + 0.2, p.angle(10)], [sl * 0.85, 0.06]])))
    na = p.angle(25)
    hc = rotate(np.array([[-sl - 0.15, 0]]), na, (-sl * 0.8, 0))[0]
    parts.append(Part("head", ellipse(*hc, p.v(0.18, 0.24), p.v(0.12, 0.16), na)))
    parts.append(Part("shell", ellipse(0, 0, sl, sh, n=56)))
    parts.append(Part("plate", regular(0, 0, min(sl, sh) * 0.55, 6, np.pi / 6), role="detail"))
    return parts


def cactus(p: Params):
    mw, mh = p.v(0.3, 0.42), p.v(1.1, 1.4)
    pot_h = p.v(0.3, 0.4)
    base_y = 1 - pot_h
    parts = []
    for side in (-1, 1):
        if p.choice(0.85):
            y0 = base_y - mh * p.rng.uniform(0.3, 0.6)
            reach = p.v(0.3, 0.45)
            up = p.v(0.25, 0.45)
            parts.append(Part(f"arm{side}", tube([[0, y0], [side * reach, y0 + 0.02], [side * reach, y0 - up]], 0.18, 0.16), role="limb"))
    parts.append(Part("column", rect(0, base_y - mh / 2 + 0.05, mw, mh, round_=mw / 2)))
    parts.append(Part("pot", trapezoid(0, 1 - pot_h / 2, p.v(0.6, 0.75), p.v(0.45, 0.55), pot_h)))
    parts.append(Part("potrim", rect(0, base_y + 0.02, p.v(0.7, 0.85), 0.1), role="detail"))
    if p.choice(0.5):
        parts.append(Part("bloom", regular(0, base_y - mh + 0.02, 0.12, 5, 0.3, inner=0.05), role="detail"))
    return parts


def rocketship(p: Params):
    bw, bh = p.v(0.32, 0.42), p.v(1.0, 1.3)
    top = -0.95
    nose_h = p.v(0.35, 0.5)
    body_y = top + nose_h + bh / 2
    parts = []
    for side in (-1, 1):
        fw, fh = p.v(0.2, 0.3), p.v(0.3, 0.45)
        by = body_y + bh / 2
        parts.append(Part(f"fin{side}", np.array([[side * bw / 2, by - fh * 1.2], [side * (bw / 2 + fw), by + 0.05],
                                                  [side * bw / 2, by - 0.02]]), role="limb"))
    parts.append(Part("body", rect(0, body_y, bw, bh, round_=0.04)))
    parts.append(Part("nose", np.vstack([bezier([[-bw / 2, top + nose_h], [-bw / 2, top + nose_h * 0.3], [0, top]], 12),
                                         bezier([[0, top], [bw / 2, top + nose_h * 0.3], [bw / 2, top + nose_h]], 12)[1:]])))
    parts.append(Part("window", ellipse(0, body_y - bh * 0.2, bw * 0.25, bw * 0.25, n=20), role="detail"))
    parts.append(Part("flame", np.array([[-bw * 0.3, body_y + bh / 2], [p.angle(10) * 0.3, body_y + bh / 2 + p.v(0.15, 0.3)],
                                         [bw * 0.3, body_y + bh / 2]]), role="detail"))
    return parts


#: Procedural templates by folder-safe name; ``make_object`` picks the builder by name.
TEMPLATES = {
    "snowman": snowman, "mushroom": mushroom, "desk_lamp": lamp, "tree": tree, "fish": fish,
    "butterfly": butterfly, "robot": robot, "bird": bird, "cup": cup, "house": house, "kite": kite,
    "flower": flower, "car": car, "guitar": guitar, "turtle": turtle, "cactus": cactus,
    "rocket_ship": rocketship,
}


def template_of(category: str) -> tuple[str, int]:
    """``"fish"`` -> ("fish", 1); ``"fish_v3"`` -> ("fish", 3) (variants of a template)."""
    base, sep, tail = category.rpartition("_v")
    if sep and tail.isdigit() and base in TEMPLATES:
        return base, int(tail)
    return category, 1


def category_style(category: str) -> np.random.Generator:
    """The generator of a category's fixed proportions and palette (stable across runs)."""
    return np.random.default_rng(zlib.crc32(category.encode()))


@dataclass
class SynthObject:
    """A posed object: its parts in photo pixels and the category palette."""

    category: str
    parts: list
    palette: np.ndarray  # [P, 3] RGB in [0, 1]


def make_object(category: str, rng: np.random.Generator, *, margin: float = 10.0) -> SynthObject:
    """Draw one instance of ``category`` and pose it in a 256 x 256 photo.

    Random pose: size (object extent 45-80% of the image), in-plane rotation +-20 degrees,
    horizontal mirror, position anywhere that keeps the object ``margin`` px inside the frame.
    """
    name, _variant = template_of(category)
    builder = TEMPLATES[name]
    style = category_style(category)
    params = Params(style, rng)
    parts = builder(params)
    palette = _palette(category_style(category + "/palette"), max(len(parts), 3))
    # pose
    pts = np.vstack([pp.polygon for pp in parts])
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    extent = float((hi - lo).max())
    size = rng.uniform(0.45, 0.8) * IMAGE_SIZE
    angle = np.deg2rad(rng.uniform(-20, 20))
    flip = rng.random() < 0.5
    s = size / extent
    posed = []
    for pp in parts:
        poly = (pp.polygon - centre) * s
        if flip:
            poly[:, 0] *= -1
        posed.append(rotate(poly, angle))
    allpts = np.vstack(posed)
    lo, hi = allpts.min(0), allpts.max(0)
    room = IMAGE_SIZE - 1 - 2 * margin - (hi - lo)
    if (room < 0).any():  # shrink to fit (rotation can enlarge the box)
        f = float(((IMAGE_SIZE - 1 - 2 * margin) / (hi - lo)).min())
        posed = [q * f for q in posed]
        lo, hi = lo * f, hi * f
        room = np.maximum(IMAGE_SIZE - 1 - 2 * margin - (hi - lo), 0)
    offset = margin - lo + rng.uniform(0, 1, 2) * room
    out = []
    for pp, poly in zip(parts, posed):
        out.append(Part(pp.name, poly + offset, pp.role, pp.color, pp.texture, pp.extra))
    return SynthObject(category, out, palette)


def _palette(style: np.random.Generator, n: int) -> np.ndarray:
    """``n`` RGB colours around two or three category hues."""
    import colorsys

    hues = style.uniform(0, 1, 3)
    out = []
    for i in range(n):
        h = (hues[i % 3] + style.normal(0, 0.03)) % 1.0
        sat = style.uniform(0.35, 0.85)
        val = style.uniform(0.45, 0.95)
        out.append(colorsys.hsv_to_rgb(h, sat, val))
    return np.array(out)
