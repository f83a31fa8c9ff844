"""Random training warps (model_zoo.augment) against an independent thin-plate spline (scipy) and
against the warp statistics SPEC §6.1 measured on the authors' generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import RBFInterpolator

from model_zoo.augment import (WARP_KINDS, WarpRanges, random_affine_params, random_tps_targets,
                               random_warp_batch, random_warp_grid, tps_grid, tps_lattice)
from model_zoo.stn import identity_grid

#: SPEC §6.1: measured on the authors' generator, 256 grids of 64 x 64 per kind
SPEC_STATS = {"affine": (0.45, 0.25), "tps": (0.15, 0.10), "afftps": (0.47, 0.28)}


def test_tps_matches_scipy_and_hits_its_control_points():
    g = torch.Generator().manual_seed(1)
    lattice = tps_lattice(4)
    targets = random_tps_targets(3, 4, 0.25, g)
    pts = identity_grid(33, dtype=torch.float64).reshape(-1, 2)
    ours = tps_grid(lattice, targets, pts)
    for b in range(3):
        ref = RBFInterpolator(lattice.numpy(), targets[b].numpy(), kernel="thin_plate_spline")(pts.numpy())
        np.testing.assert_allclose(ours[b].numpy(), ref, atol=1e-9)
    at_ctrl = tps_grid(lattice, targets, lattice)
    assert float((at_ctrl - targets).abs().max()) < 1e-4


def test_tps_grid_control_points_land_on_their_targets_in_the_grid():
    # a 4x4 lattice on [-1,1] falls on pixels of a 61-px grid (indices 0, 20, 40, 60)
    g = torch.Generator().manual_seed(2)
    grid = random_warp_grid(4, 61, "tps", generator=torch.Generator().manual_seed(2)).double()
    targets = random_tps_targets(4, 4, 0.25, g)
    idx = [0, 20, 40, 60]
    got = grid[:, idx][:, :, idx].reshape(4, 16, 2)  # rows = y, cols = x: lattice order (x fastest)
    assert float((got - targets).abs().max()) < 1e-4


def test_affine_is_their_affine_grid_and_afftps_is_affine_after_clamped_tps():
    size = 40
    theta = random_affine_params(2, WarpRanges(), torch.Generator().manual_seed(3))
    got = random_warp_grid(2, size, "affine", torch.Generator().manual_seed(3)).double()
    ref = F.affine_grid(theta, [2, 1, size, size], align_corners=False)  # their AffineGridGen default
    assert float((got - ref).abs().max()) < 1e-6
    # afftps: TPS targets drawn first, then the affine map; compose as their ComposedGeometricTnf does
    # (sample a dense affine grid at the TPS grid, bilinear, border padding)
    g = torch.Generator().manual_seed(4)
    targets = random_tps_targets(2, 4, 0.25, g)
    theta = random_affine_params(2, WarpRanges(), g)
    tps = tps_grid(tps_lattice(4), targets, identity_grid(size, dtype=torch.float64).reshape(-1, 2))
    aff = F.affine_grid(theta, [2, 1, 256, 256], align_corners=True)
    ref = F.grid_sample(aff.permute(0, 3, 1, 2), tps.reshape(2, size, size, 2), mode="bilinear",
                        padding_mode="border", align_corners=True).permute(0, 2, 3, 1)
    got = random_warp_grid(2, size, "afftps", torch.Generator().manual_seed(4)).double()
    assert float((got - ref).abs().max()) < 1e-5


def test_affine_parameters_stay_in_the_authors_ranges():
    theta = random_affine_params(4000, WarpRanges(), torch.Generator().manual_seed(5))
    assert float(theta[:, :, 2].abs().max()) <= 0.5
    assert float(theta[:, :, 2].abs().max()) > 0.49
    sv = torch.linalg.svdvals(theta[:, :, :2])
    assert float(sv.min()) >= 0.5 - 1e-9 and float(sv.max()) <= 1.5 + 1e-9


@pytest.mark.parametrize("kind", WARP_KINDS)
def test_warp_statistics_match_the_authors_generator(kind):
    n, size = 256, 64
    grid = random_warp_grid(n, size, kind, torch.Generator().manual_seed(0)).double()
    disp = (grid - identity_grid(size, dtype=torch.float64)).norm(dim=-1).mean(dim=(1, 2))   # per grid
    off = (grid.abs() > 1).any(dim=-1).double().mean(dim=(1, 2))
    want_disp, want_off = SPEC_STATS[kind]
    # tolerance: 4 standard errors of the mean over 256 grids, plus the SPEC's 2-decimal rounding
    for got, want in ((disp, want_disp), (off, want_off)):
        tol = 4 * float(got.std()) / math.sqrt(n) + 0.005
        assert abs(float(got.mean()) - want) <= tol, (kind, float(got.mean()), want, tol)


def test_statistics_test_would_catch_the_old_bug_and_half_ranges():
    # half the authors' ranges: displacement clearly below SPEC's (the statistic has power)
    grid = random_warp_grid(256, 64, "affine", torch.Generator().manual_seed(0), WarpRanges().scaled(0.5)).double()
    disp = float((grid - identity_grid(64, dtype=torch.float64)).norm(dim=-1).mean())
    assert disp < SPEC_STATS["affine"][0] - 0.1


def test_batch_draws_each_kind_and_bad_kind_is_refused():
    grids = random_warp_batch(60, 16, ("affine", "tps"), torch.Generator().manual_seed(0))
    assert grids.shape == (60, 16, 16, 2)
    only_tps = random_warp_batch(5, 16, ("tps",), torch.Generator().manual_seed(0))
    assert float((only_tps[:, 0, 0] - torch.tensor([-1.0, -1.0])).abs().max()) <= 0.25 + 1e-6
    with pytest.raises(ValueError, match="hom"):
        random_warp_grid(1, 8, "hom")
