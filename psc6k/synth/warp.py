"""Smooth invertible deformations between a sketch and its photo.

A :class:`SmoothWarp` maps sketch pixels to photo pixels,

    T(p) = M (p + D(p)),

where ``M`` is an affine map (rotation, anisotropic scale, shear, translation) and ``D`` is a
thin-plate spline interpolating small random displacements at a coarse grid of control points.
``T`` is exact (closed form) in the sketch -> photo direction; the photo -> sketch direction is
its numerical inverse, solved by a contraction (``D`` is kept ``lipschitz`` < 1) to far below
1e-6 px. Coordinates are pixels: x = column, y = row, origin at the centre of the top-left pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psc6k import IMAGE_SIZE

#: Coordinates are divided by this before the TPS kernel, for conditioning.
_TPS_SCALE = float(IMAGE_SIZE)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r, written with r^2 (U = r2 * log(r2) / 2), 0 at r = 0."""
    return 0.5 * r2 * np.log(np.maximum(r2, 1e-300))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances [N, M] between points a [N, 2] and b [M, 2] (no [N, M, 2] temporary)."""
    dx = a[:, 0:1] - b[None, :, 0]
    dy = a[:, 1:2] - b[None, :, 1]
    return dx * dx + dy * dy


@dataclass(frozen=True)
class ThinPlateSpline:
    """A 2-D thin-plate spline displacement field ``D(p)`` (pixels -> pixels).

    Parameters
    ----------
    centers : ndarray [M, 2]
        Control points in pixels.
    weights : ndarray [M, 2]
        Kernel weights (normalised units).
    affine : ndarray [3, 2]
        The spline's own affine part ``[1, x, y] @ affine`` (normalised units).
    """

    centers: np.ndarray
    weights: np.ndarray
    affine: np.ndarray

    @classmethod
    def fit(cls, centers: np.ndarray, displacements: np.ndarray, regularization: float = 0.0) -> "ThinPlateSpline":
        """Interpolate ``displacements`` [M, 2] (pixels) given at ``centers`` [M, 2] (pixels)."""
        c = np.asarray(centers, float) / _TPS_SCALE
        d = np.asarray(displacements, float) / _TPS_SCALE
        m = len(c)
        k = _tps_kernel(_sq_dists(c, c)) + regularization * np.eye(m)
        p = np.hstack([np.ones((m, 1)), c])
        a = np.zeros((m + 3, m + 3))
        a[:m, :m], a[:m, m:], a[m:, :m] = k, p, p.T
        rhs = np.vstack([d, np.zeros((3, 2))])
        sol = np.linalg.solve(a, rhs)
        return cls(np.asarray(centers, float), sol[:m], sol[m:])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Displacement in pixels at ``points`` [..., 2] (pixels)."""
        pts = np.asarray(points, float)
        flat = pts.reshape(-1, 2) / _TPS_SCALE
        c = self.centers / _TPS_SCALE
        u = _tps_kernel(_sq_dists(flat, c))
        out = u @ self.weights + self.affine[0] + flat @ self.affine[1:]
        return (out * _TPS_SCALE).reshape(pts.shape)

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """Jacobian dD/dp [..., 2 (output), 2 (input)] at ``points`` [..., 2] (dimensionless)."""
        pts = np.asarray(points, float)
        flat = pts.reshape(-1, 2) / _TPS_SCALE
        c = self.centers / _TPS_SCALE
        diffs = (flat[:, 0:1] - c[None, :, 0], flat[:, 1:2] - c[None, :, 1])  # [N, M] each
        r2 = diffs[0] * diffs[0] + diffs[1] * diffs[1]
        g = np.where(r2 > 0, np.log(np.maximum(r2, 1e-300)) + 1.0, 0.0)  # dU/dp = diff * g
        jac = np.empty((len(flat), 2, 2))
        for i in range(2):  # d D / d p_i = sum_m w_m g_m diff_mi + affine
            jac[:, :, i] = (g * diffs[i]) @ self.weights + self.affine[1 + i]
        return jac.reshape(pts.shape[:-1] + (2, 2))


@dataclass(frozen=True)
class SmoothWarp:
    """``T(p) = M (p + D(p))``: sketch pixels -> photo pixels, with its numerical inverse.

    Parameters
    ----------
    matrix : ndarray [2, 3]
        Affine part ``M`` (pixels -> pixels), applied as ``matrix[:, :2] @ p + matrix[:, 2]``.
    tps : ThinPlateSpline or None
        Non-rigid displacement ``D`` applied before ``M``; None for a purely affine warp.
    """

    matrix: np.ndarray
    tps: ThinPlateSpline | None = None

    @classmethod
    def identity(cls) -> "SmoothWarp":
        return cls(np.array([[1.0, 0, 0], [0, 1.0, 0]]))

    def displacement(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, float)
        return np.zeros_like(pts) if self.tps is None else self.tps(pts)

    def forward(self, points: np.ndarray) -> np.ndarray:
        """Sketch pixels [..., 2] -> photo pixels [..., 2] (closed form)."""
        pts = np.asarray(points, float)
        q = pts + self.displacement(pts)
        return q @ self.matrix[:, :2].T + self.matrix[:, 2]

    def inverse(self, points: np.ndarray, iterations: int = 60, tol: float = 1e-7) -> np.ndarray:
        """Photo pixels [..., 2] -> sketch pixels [..., 2], solved numerically to ``tol`` px.

        Solves ``p + D(p) = M^-1 q``. ``D`` is a contraction (see :meth:`lipschitz`), so the
        solution is unique and the fixed-point step ``p <- M^-1 q - D(p)`` converges from anywhere;
        it runs until steps are below 1e-3 px (or ``tol`` if looser), then Newton steps (quadratic
        convergence, ``I + dD/dp`` is never singular) reach ``tol``.
        """
        q = np.asarray(points, float)
        a_inv = np.linalg.inv(self.matrix[:, :2])
        r = (q - self.matrix[:, 2]) @ a_inv.T
        if self.tps is None or r.size == 0:
            return r
        shape = r.shape
        r = r.reshape(-1, 2)
        p = r.copy()
        coarse = max(tol, 1e-3)
        for _ in range(iterations):
            p_next = r - self.tps(p)
            step = np.abs(p_next - p).max()
            p = p_next
            if step < coarse:
                break
        if tol < coarse:
            for _ in range(6):
                res = p + self.tps(p) - r
                if np.abs(res).max() < tol:
                    break
                jac = self.tps.jacobian(p) + np.eye(2)
                det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
                dx = (jac[:, 1, 1] * res[:, 0] - jac[:, 0, 1] * res[:, 1]) / det
                dy = (-jac[:, 1, 0] * res[:, 0] + jac[:, 0, 0] * res[:, 1]) / det
                p = p - np.stack([dx, dy], -1)
        return p.reshape(shape)

    def lipschitz(self, lo: float = -32.0, hi: float = IMAGE_SIZE + 31.0, n: int = 33) -> float:
        """Largest spectral norm of the Jacobian of ``D`` on an ``n`` x ``n`` grid over [lo, hi]^2."""
        if self.tps is None:
            return 0.0
        g = np.linspace(lo, hi, n)
        xx, yy = np.meshgrid(g, g)
        jac = self.tps.jacobian(np.stack([xx, yy], -1)).reshape(-1, 2, 2)
        # largest singular value of each 2x2 Jacobian, in closed form
        t = (jac ** 2).sum((1, 2))
        det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
        return float(np.sqrt((t + np.sqrt(np.maximum(t * t - 4 * det * det, 0))) / 2).max())


def pixel_grid(size: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixel coordinates [size, size, 2] of an ``align_corners=True`` flow grid (SPEC §5)."""
    g = np.linspace(0.0, image_size - 1.0, size)
    xx, yy = np.meshgrid(g, g)
    return np.stack([xx, yy], -1)


def to_normalized(points_px: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixels -> grid_sample coordinates in [-1, 1] (``align_corners=True``)."""
    return np.asarray(points_px, float) * (2.0 / (image_size - 1.0)) - 1.0


def warp_flows(warp: SmoothWarp, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ground-truth flows of a pair on a ``size`` x ``size`` grid.

    Returns
    -------
    sketch_to_photo, photo_to_sketch : ndarray [size, size, 2] float32
        Normalised (u, v) per SPEC §5; the first lies on the sketch grid, the second on the photo grid.
    """
    grid = pixel_grid(size)
    s2p = to_normalized(warp.forward(grid))
    p2s = to_normalized(warp.inverse(grid))
    return s2p.astype(np.float32), p2s.astype(np.float32)


def random_warp(rng: np.random.Generator, *, strength: float = 1.0, center=(127.5, 127.5),
                max_lipschitz: float = 0.45) -> SmoothWarp:
    """A moderate random sketch -> photo deformation: affine about ``center`` + TPS on a 5x5 grid.

    ``strength`` in [0, 1] scales every component (0 = identity). The TPS part is shrunk until its
    Jacobian norm is below ``max_lipschitz``, which keeps ``T`` a diffeomorphism with a
    fast-converging inverse.
    """
    s = float(strength)
    angle = np.deg2rad(rng.uniform(-18, 18) * s)
    scale = np.exp(rng.uniform(-0.15, 0.15) * s)
    aspect = np.exp(rng.uniform(-0.10, 0.10) * s)
    shear = rng.uniform(-0.12, 0.12) * s
    shift_dir = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(22, 42) * s * np.array([np.cos(shift_dir), np.sin(shift_dir)])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lin = rot @ np.array([[scale * aspect, shear], [0.0, scale / aspect]])
    c = np.asarray(center, float)
    matrix = np.hstack([lin, (c - lin @ c + shift)[:, None]])

    g = np.linspace(-32.0, IMAGE_SIZE + 31.0, 5)
    cx, cy = np.meshgrid(g, g)
    centers = np.stack([cx.ravel(), cy.ravel()], -1)
    disp = rng.normal(0.0, 7.0 * s, size=centers.shape)
    tps = ThinPlateSpline.fit(centers, disp)
    warp = SmoothWarp(matrix, tps)
    lip = warp.lipschitz()
    if lip > max_lipschitz:
        tps = ThinPlateSpline.fit(centers, disp * (max_lipschitz / lip) * 0.95)
        warp = SmoothWarp(matrix, tps)
    return warp
