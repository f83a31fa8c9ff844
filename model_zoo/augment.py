"""Training augmentations (SPEC §6): colour jitter, grayscale, Gaussian blur, and random affine +
thin-plate-spline warps (used instead of random crops), built on kornia.

Random warps are returned as sampling grids [N, H, W, 2] in the ``grid_sample`` convention
(``align_corners=True``), applied with :func:`apply_warp`.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_tps_transform, warp_points_tps
from torch import Tensor, nn

from model_zoo.stn import identity_grid, safe_grid

__all__ = ["color_augmentation", "random_affine_tps_grid", "apply_warp"]


def color_augmentation(blur_kernel: int = 13) -> nn.Module:
    """The MoCo v2 colour pipeline used by PSCNet: jitter (0.4, 0.4, 0.4, 0.1), grayscale p=0.2,
    Gaussian blur sigma in [0.1, 2] p=0.5. Input and output are RGB in [0, 1]."""
    blur_kernel = blur_kernel if blur_kernel % 2 else blur_kernel + 1
    return nn.Sequential(
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 2.0), p=0.5),
    )


def _affine_matrices(n: int, max_rotation: float, scale: tuple[float, float], max_translation: float,
                     generator: torch.Generator | None) -> Tensor:
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-max_rotation, max_rotation)
    s = uniform(*scale)
    tx, ty = uniform(-max_translation, max_translation), uniform(-max_translation, max_translation)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # [n, 2, 3]


def random_affine_tps_grid(n: int, size: int, *, max_rotation: float = math.pi / 8, scale=(0.75, 1.25),
                           max_translation: float = 0.25, tps_grid: int = 4, tps_jitter: float = 0.125,
                           generator: torch.Generator | None = None, device=None) -> Tensor:
    """Random smooth warps: an affine map composed with a thin-plate spline.

    The TPS moves a ``tps_grid`` x ``tps_grid`` lattice of control points by up to ``tps_jitter``
    (normalised units, uniform); the affine map rotates by up to ``max_rotation`` radians, scales
    by a factor in ``scale`` and translates by up to ``max_translation``.

    Returns
    -------
    Tensor [n, size, size, 2]
        Sampling grid: output pixel (i, j) reads the input at ``grid[:, i, j]``.
    """
    # the warp is smooth: evaluate it on a coarse lattice and upsample (bilinear) to ``size``
    coarse = min(size, 33)
    base = identity_grid(coarse).reshape(1, -1, 2).expand(n, -1, -1)  # [n, P, 2]
    lin = torch.linspace(-1.0, 1.0, tps_grid)
    ctrl = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), -1).reshape(1, -1, 2).expand(n, -1, -1)
    moved = ctrl + tps_jitter * (2 * torch.rand(ctrl.shape, generator=generator) - 1)
    # kornia: the spline fitted from dst -> src control points maps output points to input points
    kernel_w, affine_w = get_tps_transform(ctrl.contiguous(), moved)
    pts = warp_points_tps(base.contiguous(), ctrl.contiguous(), kernel_w, affine_w)
    theta = _affine_matrices(n, max_rotation, tuple(scale), max_translation, generator)
    pts = pts @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)
    grid = pts.reshape(n, coarse, coarse, 2)
    if coarse != size:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), (size, size), mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)
    return grid.contiguous().to(device)


def apply_warp(images: Tensor, grid: Tensor) -> Tensor:
    """Warp images [N, C, H, W] by a sampling grid [N, h, w, 2] (bilinear, border padding)."""
    if grid.shape[1:3] != images.shape[-2:]:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), images.shape[-2:], mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(images, safe_grid(grid.to(images.dtype)), mode="bilinear", padding_mode="border",
                         align_corners=True)
