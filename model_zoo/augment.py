"""Training augmentations (SPEC §6.1): colour jitter, grayscale, Gaussian blur, and random
affine / thin-plate-spline warps (used instead of random crops).

The warps reproduce the generator the authors' trainer uses (``SynthecticAffHomoTPSTransfo`` of
DenseMatching, in their ``utils/spatial_transforms.py``) with the ranges their ``trainer.py``
passes: affine with translation +-0.5, rotation and shear angles +-pi/8 and two axis scales in
[0.5, 1.5]; a thin-plate spline on a 4 x 4 lattice of control points each moved by up to +-0.25
per coordinate; and ``afftps``, the affine map read at the (border-clamped) TPS points.

Warps are sampling grids [N, H, W, 2] in the ``grid_sample`` convention (``align_corners=True``):
output pixel (i, j) reads the input at ``grid[:, i, j]``. :func:`apply_warp` applies them.

The spline is solved here in a few lines of torch rather than through kornia: the previous
kornia-based version evaluated the spline with the wrong centres (issue 14), and the closed-form
solve is tested against ``scipy.interpolate.RBFInterpolator(kernel="thin_plate_spline")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_zoo.stn import identity_grid, safe_grid

__all__ = ["WARP_KINDS", "WarpRanges", "color_augmentation", "random_warp_grid", "tps_grid", "affine_grid",
           "random_affine_params", "random_tps_targets", "tps_lattice", "random_warp_batch", "apply_warp"]

WARP_KINDS = ("affine", "tps", "afftps")


@dataclass(frozen=True)
class WarpRanges:
    """Ranges of the random warps; the defaults are the authors' (``trainer.py``, SPEC §6.1)."""

    translation: float = 0.5          # affine tx, ty ~ U(-t, t)
    angle: float = math.pi / 8        # rotation and shear angles ~ U(-a, a)
    scale: tuple[float, float] = (0.5, 1.5)  # two axis scales ~ U(lo, hi)
    tps_grid: int = 4                 # control lattice is tps_grid x tps_grid
    tps_jitter: float = 0.25          # control targets moved by U(-j, j) per coordinate (tps)
    afftps_jitter: float = 0.25       # the same for the TPS part of afftps

    def scaled(self, strength: float) -> "WarpRanges":
        """Every range multiplied by ``strength`` (scale range around 1); 1 gives the authors'."""
        lo, hi = self.scale
        return WarpRanges(self.translation * strength, self.angle * strength,
                          (1 - (1 - lo) * strength, 1 + (hi - 1) * strength), self.tps_grid,
                          self.tps_jitter * strength, self.afftps_jitter * strength)


def color_augmentation(blur_kernel: int = 13, jitter_p: float = 1.0) -> nn.Module:
    """The colour pipeline of the authors' trainer (MoCo v2's): ``ColorJitter(0.4, 0.4, 0.4, 0.1)``
    with kornia's default p = 1 (``jitter_p``), ``RandomGrayscale(p=0.2)``,
    ``RandomGaussianBlur((13, 13), (0.1, 2.0), p=0.5)``. RGB in [0, 1] in and out (the ImageNet
    normalisation, the last step of their pipeline, is done by :meth:`PSCNet.normalize`)."""
    blur_kernel = blur_kernel if blur_kernel % 2 else blur_kernel + 1
    return nn.Sequential(
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=jitter_p),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 2.0), p=0.5),
    )


def _uniform(shape, lo: float, hi: float, generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)


def random_affine_params(n: int, ranges: WarpRanges = WarpRanges(), generator: torch.Generator | None = None) -> Tensor:
    """Random affine maps [n, 2, 3] (float64) as the authors draw them: A = R(rot) R(sh)^T D R(sh)."""
    rot = _uniform(n, -ranges.angle, ranges.angle, generator)
    sh = _uniform(n, -ranges.angle, ranges.angle, generator)
    d = torch.stack([_uniform(n, *ranges.scale, generator), _uniform(n, *ranges.scale, generator)], 1)
    t = torch.stack([_uniform(n, -ranges.translation, ranges.translation, generator),
                     _uniform(n, -ranges.translation, ranges.translation, generator)], 1)

    def rotation(a):
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # [n, 2, 2]

    r_sh = rotation(sh)
    a = rotation(rot) @ r_sh.transpose(1, 2) @ torch.diag_embed(d) @ r_sh
    return torch.cat([a, t.unsqueeze(-1)], -1)


def tps_lattice(grid: int = 4, dtype=torch.float64) -> Tensor:
    """The control lattice [grid**2, 2] (x, y) on [-1, 1]^2."""
    lin = torch.linspace(-1.0, 1.0, grid, dtype=dtype)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)


def random_tps_targets(n: int, grid: int = 4, jitter: float = 0.25,
                       generator: torch.Generator | None = None) -> Tensor:
    """Control-point targets [n, grid**2, 2]: the lattice moved by U(-jitter, jitter) per coordinate."""
    base = tps_lattice(grid)
    return base + _uniform((n, *base.shape), -jitter, jitter, generator)


def _tps_kernel(d2: Tensor) -> Tensor:
    # U(r) = r^2 log r^2 (their TpsGridGen); U(0) = 0
    return torch.where(d2 > 0, d2 * torch.log(d2.clamp_min(1e-30)), torch.zeros_like(d2))


def tps_grid(centres: Tensor, targets: Tensor, points: Tensor) -> Tensor:
    """Thin-plate spline through ``centres`` -> ``targets`` evaluated at ``points``.

    Parameters
    ----------
    centres : Tensor [P, 2]
        Control points (the spline's centres).
    targets : Tensor [n, P, 2]
        Where each control point maps to; the spline interpolates them exactly (no smoothing).
    points : Tensor [M, 2]
        Where to evaluate.

    Returns
    -------
    Tensor [n, M, 2]
        ``f(points)`` with ``f(centres[k]) = targets[:, k]``; float64.
    """
    c = centres.to(torch.float64)
    q = targets.to(torch.float64)
    p = c.shape[0]
    kmat = _tps_kernel(torch.cdist(c, c) ** 2)
    poly = torch.cat([torch.ones(p, 1, dtype=c.dtype), c], 1)                  # [P, 3]
    lmat = torch.zeros(p + 3, p + 3, dtype=c.dtype)
    lmat[:p, :p], lmat[:p, p:], lmat[p:, :p] = kmat, poly, poly.T
    rhs = torch.cat([q, torch.zeros(q.shape[0], 3, 2, dtype=c.dtype)], 1)       # [n, P+3, 2]
    coef = torch.linalg.solve(lmat, rhs)                                       # [n, P+3, 2]
    x = points.to(torch.float64)
    basis = torch.cat([_tps_kernel(torch.cdist(x, c) ** 2), torch.ones(len(x), 1, dtype=c.dtype), x], 1)
    return basis @ coef


def affine_grid(theta: Tensor, size: int, align_corners: bool = True) -> Tensor:
    """``F.affine_grid`` of ``theta`` [n, 2, 3] at ``size`` x ``size`` (float64)."""
    return F.affine_grid(theta.to(torch.float64), [theta.shape[0], 1, size, size], align_corners=align_corners)


def random_warp_grid(n: int, size: int, kind: str = "afftps", generator: torch.Generator | None = None,
                     ranges: WarpRanges = WarpRanges()) -> Tensor:
    """Random sampling grids of one warp kind, as the authors' generator makes them.

    Parameters
    ----------
    n : int
        Number of grids.
    size : int
        Output side (pixels).
    kind : {"affine", "tps", "afftps"}
        ``affine``: ``F.affine_grid`` of a random affine map (their ``AffineGridGen``, which calls
        it with the default ``align_corners=False`` lattice); ``tps``: a thin-plate spline moving
        the control lattice by up to ``ranges.tps_jitter``; ``afftps``: the affine map evaluated at
        the TPS points clamped to [-1, 1] (their ``ComposedGeometricTnf`` samples the affine grid
        at the TPS grid with border padding).
    generator : torch.Generator, optional
        Source of randomness (reproducible warps).
    ranges : WarpRanges
        Parameter ranges; default the authors'.

    Returns
    -------
    Tensor [n, size, size, 2]
        float32 sampling grids (``align_corners=True``); values may leave [-1, 1] (the image
        is then read with border padding, as in their trainer).

    Examples
    --------
    >>> g = random_warp_grid(2, 32, "tps", torch.Generator().manual_seed(0))
    >>> tuple(g.shape)
    (2, 32, 32, 2)
    """
    if kind not in WARP_KINDS:
        raise ValueError(f"warp kind must be one of {WARP_KINDS}, got {kind!r}")
    if n == 0:
        return torch.empty(0, size, size, 2)
    if kind == "affine":
        grid = affine_grid(random_affine_params(n, ranges, generator), size, align_corners=False)
        return grid.float()
    jitter = ranges.tps_jitter if kind == "tps" else ranges.afftps_jitter
    lattice = tps_lattice(ranges.tps_grid)
    targets = random_tps_targets(n, ranges.tps_grid, jitter, generator)
    points = identity_grid(size, dtype=torch.float64).reshape(-1, 2)
    pts = tps_grid(lattice, targets, points)                                   # [n, M, 2]
    if kind == "afftps":
        theta = random_affine_params(n, ranges, generator)
        pts = pts.clamp(-1.0, 1.0) @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)
    return pts.reshape(n, size, size, 2).float()


def random_warp_batch(n: int, size: int, kinds=WARP_KINDS, generator: torch.Generator | None = None,
                      ranges: WarpRanges = WarpRanges(), device=None) -> Tensor:
    """[n, size, size, 2] grids, each of a kind drawn uniformly from ``kinds`` (their ``--trans-type``)."""
    kinds = tuple(kinds)
    pick = torch.randint(len(kinds), (n,), generator=generator)
    out = torch.empty(n, size, size, 2)
    for k, kind in enumerate(kinds):
        idx = (pick == k).nonzero().flatten()
        if len(idx):
            out[idx] = random_warp_grid(len(idx), size, kind, generator, ranges)
    return out.to(device) if device is not None else out


def apply_warp(images: Tensor, grid: Tensor) -> Tensor:
    """Warp images [N, C, H, W] by a sampling grid [N, h, w, 2] (bilinear, border padding)."""
    if grid.shape[1:3] != images.shape[-2:]:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), images.shape[-2:], mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(images, safe_grid(grid.to(images.dtype)), mode="bilinear", padding_mode="border",
                         align_corners=True)
