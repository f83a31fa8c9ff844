"""psc6k predict --features: feature matching on features whose correct flow is known
(positional features -> identity, mirrored ones -> the mirror), the PSCNet and timm adapters,
MODULE:CALLABLE loading, and the user-facing errors."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_zoo.features import (MatchOptions, PSCNetFeatures, cell_centres_px, grid_points_px,  # noqa: E402
                                load_extractor, match_flow)
from psc6k.cli import main  # noqa: E402
from psc6k.pck import flow_to_pixels  # noqa: E402
from psc6k.submission import load_submission  # noqa: E402

torch.set_num_threads(2)
S = 256


def positional(h, w, image_size=S, sigma=None, mirror=False):
    """Features [1, C, h, w] that encode each cell's centre: Gaussian bumps on a 12 x 12 lattice."""
    cy, cx = cell_centres_px(h, image_size), cell_centres_px(w, image_size)
    if mirror:
        cx = (image_size - 1) - cx
    mu = torch.linspace(0, image_size - 1, 12, dtype=torch.float64)
    sigma = sigma or image_size / 12
    fy = torch.exp(-((cy[:, None] - mu[None]) ** 2) / (2 * sigma ** 2))   # [h, 12]
    fx = torch.exp(-((cx[:, None] - mu[None]) ** 2) / (2 * sigma ** 2))   # [w, 12]
    feats = fy.T[:, None, :, None] * fx.T[None, :, None, :]                # [12, 12, h, w]
    return feats.reshape(1, 144, h, w).float()


def nearest_centre(points_px, n, image_size=S):
    c = cell_centres_px(n, image_size).numpy()
    return c[np.abs(points_px[:, None] - c[None]).argmin(axis=1)]


def test_features_at_image_resolution_give_exactly_the_identity_and_the_mirror():
    f = positional(8, 8, image_size=8)
    flow = match_flow(f, f, image_size=8)[0].numpy()
    lin = np.linspace(-1, 1, 8)
    np.testing.assert_allclose(flow[..., 0], np.broadcast_to(lin, (8, 8)), atol=1e-6)
    np.testing.assert_allclose(flow[..., 1], np.broadcast_to(lin[:, None], (8, 8)), atol=1e-6)
    mirrored = match_flow(positional(8, 8, image_size=8, mirror=True), f, image_size=8)[0].numpy()
    np.testing.assert_allclose(mirrored[..., 0], -flow[..., 0], atol=1e-6)
    np.testing.assert_allclose(mirrored[..., 1], flow[..., 1], atol=1e-6)


@pytest.mark.parametrize("mirror", [False, True])
def test_coarse_features_match_the_nearest_cell_centre(mirror):
    # 16 x 16 features of a 256 px image: every grid point lands on the target cell centre nearest to
    # its true correspondence, so the error is at most half a cell (8 px)
    src, tgt = positional(16, 16, mirror=mirror), positional(16, 16)
    flow_px = flow_to_pixels(match_flow(src, tgt)[0].numpy())
    grid = grid_points_px(16, S).numpy()
    true_x = (S - 1) - grid if mirror else grid
    np.testing.assert_allclose(flow_px[0, :, 0], nearest_centre(true_x, 16), atol=1e-4)
    np.testing.assert_allclose(flow_px[:, 0, 1], nearest_centre(grid, 16), atol=1e-4)
    assert np.abs(flow_px[0, :, 0] - true_x).max() <= 8.0 + 1e-6
    # finer matching grid (features upsampled): the error bound shrinks with the cell, except within
    # half a coarse cell of the border, where bilinear upsampling repeats the outermost cell
    fine = flow_to_pixels(match_flow(src, tgt, options=MatchOptions(size=64))[0].numpy())
    true_fine = (S - 1) - grid_points_px(64, S).numpy() if mirror else grid_points_px(64, S).numpy()
    err = np.abs(fine[0, :, 0] - true_fine)
    inner = (true_fine >= 7.5 + 4) & (true_fine <= 247.5 - 4)  # + one fine cell
    assert err[inner].max() <= 2.0 + 1e-6 and err.max() <= 8.0 + 1e-6


def test_soft_argmax_refines_below_the_cell():
    src = tgt = positional(16, 16)
    hard = flow_to_pixels(match_flow(src, tgt)[0].numpy())
    soft = flow_to_pixels(match_flow(src, tgt, options=MatchOptions(soft_argmax=True))[0].numpy())
    grid = grid_points_px(16, S).numpy()
    # interior points (a convex combination of cell centres cannot reach the outer half cell)
    err = lambda f: np.abs(f[1:15, 1:15, 0] - grid[None, 1:15]).mean()  # noqa: E731
    assert err(hard) == pytest.approx(3.5, abs=0.01)   # |17 j - nearest (16 k + 7.5)| averages 3.5 px
    assert err(soft) < 0.3 * err(hard)


def test_mutual_check_repairs_unmatched_points():
    src, tgt = positional(16, 16), positional(16, 16)
    grid = grid_points_px(16, S).numpy()
    # a 2x2 patch of source cells gets (mostly) the features of the far corner: its nearest
    # neighbour is the corner, whose own best source is the true corner point: not mutual
    src = src.clone()
    src[..., 6:8, 6:8] = 0.8 * tgt[..., 15:16, 15:16] + 0.2 * tgt[..., 0:1, 0:1]
    plain = flow_to_pixels(match_flow(src, tgt)[0].numpy())
    fixed = flow_to_pixels(match_flow(src, tgt, options=MatchOptions(mutual=True))[0].numpy())
    assert np.abs(plain[6, 6] - [grid[6], grid[6]]).max() > 100
    assert np.abs(fixed[6, 6] - [grid[6], grid[6]]).max() <= 16
    np.testing.assert_allclose(fixed[:4, :4], plain[:4, :4])  # mutual elsewhere: untouched


def test_pscnet_features_are_the_correlated_layers_per_domain():
    from model_zoo.testing import tiny_model

    model = tiny_model().eval()
    with torch.no_grad():  # distinct photo / sketch BatchNorm copies
        for name, p in model.named_parameters():
            if ".norms.1." in name:
                p.add_(0.3)
    ext = PSCNetFeatures(model)
    images = torch.rand(2, 3, 64, 64)
    photo, sketch = ext(images, "photo"), ext(images, "sketch")
    feats = model.encode(images, 0)
    size = model.config.feat_size
    want = torch.cat([torch.nn.functional.normalize(torch.nn.functional.interpolate(
        feats[f"layer{k}"], (size, size), mode="bilinear", align_corners=False), dim=1) for k in (2, 3)], 1)
    torch.testing.assert_close(photo, want)
    assert photo.shape[-2:] == (size, size) and not torch.allclose(photo, sketch)


@pytest.fixture()
def tree(tmp_path):
    from model_zoo.testing import make_tiny_tree
    from psc6k.formats import Annotations, write_test_pairs_ps

    root = tmp_path / "sketchy"
    photos, sketches = make_tiny_tree(root, n_pairs=3, size=64)
    kps = np.random.default_rng(0).uniform(10, 245, (3, 8, 2))
    ann = Annotations.from_arrays(photos, sketches, kps, kps)
    write_test_pairs_ps(ann, tmp_path / "pairs.csv")
    return root, tmp_path / "pairs.csv", ann


EXTRACTOR = '''
import torch
from model_zoo.features import cell_centres_px

def positional(images, domain):
    n, _, h, w = images.shape
    c = cell_centres_px(16, 256).float()
    if domain == "sketch":
        c = 255 - c           # the sketch is the photo mirrored left-right
    mu = torch.linspace(0, 255, 12)
    fx = torch.exp(-((c[:, None] - mu[None]) ** 2) / (2 * 21.3 ** 2)).T
    fy = torch.exp(-((cell_centres_px(16, 256).float()[:, None] - mu[None]) ** 2) / (2 * 21.3 ** 2)).T
    return (fy[:, None, :, None] * fx[None, :, None, :]).reshape(1, 144, 16, 16).expand(n, -1, -1, -1)

def wrong_shape(images, domain):
    return torch.zeros(images.shape[0], 4)

def not_finite(images, domain):
    return torch.full((images.shape[0], 2, 4, 4), float("nan"))
'''


def test_cli_callable_writes_the_mirror_both_directions(tmp_path, tree, capsys):
    root, pairs, ann = tree
    (tmp_path / "myext.py").write_text(EXTRACTOR)
    out = tmp_path / "mirror.npz"
    assert main(["predict", "--features", f"{tmp_path / 'myext.py'}:positional", "-a", str(pairs), "-i", str(root),
                 "-o", str(out), "--image-size", "64", "--workers", "0", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flow_size"] == [16, 16] and summary["pairs"] == 3
    sub = load_submission(out)
    grid = grid_points_px(16, S).numpy()
    for field in (sub.sketch_to_photo, sub.photo_to_sketch):
        px = flow_to_pixels(field)
        np.testing.assert_allclose(px[:, 0, :, 0], np.broadcast_to(nearest_centre(255 - grid, 16), (3, 16)), atol=1e-3)
        assert np.abs(px[:, 0, :, 0] - (255 - grid)).max() <= 8 + 1e-3
    sys.modules.pop("myext", None)


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected MODULE:CALLABLE"),
    ("no_such_module_xyz:f", "cannot import"),
    ("{py}:missing", "has no attribute"),
    ("{py}:wrong_shape", "expected [N, C, h, w]"),
    ("{py}:not_finite", "NaN or infinite"),
    ("pscnet", "needs --checkpoint"),
    ("timm:vit_small_patch14_dinov2", "timm"),
])
def test_cli_feature_errors_are_one_line(tmp_path, tree, capsys, spec, message):
    root, pairs, _ = tree
    (tmp_path / "badext.py").write_text(EXTRACTOR)
    spec = spec.format(py=tmp_path / "badext.py")
    status = main(["predict", "--features", spec, "-a", str(pairs), "-i", str(root), "-o", str(tmp_path / "x.npz"),
                   "--image-size", "64", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err
    sys.modules.pop("badext", None)


def test_cli_pscnet_features_on_a_released_layout_checkpoint(tmp_path, tree, capsys):
    from model_zoo.testing import random_released_state_dict, read_state_dict_tsv, REFERENCE_DIR

    root, pairs, ann = tree
    state = random_released_state_dict(read_state_dict_tsv(REFERENCE_DIR / "pscnet_resnet18_state_dict.tsv"))
    ckpt = tmp_path / "psc_resnet18.pth.tar"
    torch.save({"state_dict": state}, ckpt)
    out = tmp_path / "pscnet_feats.json"
    assert main(["predict", "--features", "pscnet", "--checkpoint", str(ckpt), "-a", str(pairs), "-i", str(root),
                 "-o", str(out), "--image-size", "64", "--workers", "0", "--no-progress", "--json",
                 "--mutual", "--soft-argmax"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sub = load_submission(out)
    assert sub.sketch_to_photo.shape == (3, 16, 16, 2) and summary["matching"]["mutual"] is True
    assert np.isfinite(sub.photo_to_sketch).all() and np.abs(sub.photo_to_sketch).max() <= 1.0 + 1e-6


def test_timm_adapter_loads_local_weights_only(tmp_path, monkeypatch):
    """A stand-in ``timm`` module: the adapter must build the model without pretrained weights,
    load the local file, normalise, and return the chosen intermediate map."""
    calls = {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 4, stride=4)
            self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

        def forward_intermediates(self, x, indices, intermediates_only):
            calls["input"] = x
            return [self.conv(x)]

    def create_model(name, pretrained, num_classes, **kw):
        calls.update(name=name, pretrained=pretrained)
        return Net()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    weights = tmp_path / "w.pth"
    net = Net()
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, weights)
    ext = load_extractor("timm:fake_net", weights=weights, input_size=32)
    images = torch.rand(2, 3, 64, 64)
    out = ext(images, "photo")
    assert calls["name"] == "fake_net" and calls["pretrained"] is False
    assert out.shape == (2, 5, 8, 8)
    torch.testing.assert_close(ext.model.conv.weight, net.conv.weight)
    assert calls["input"].shape[-1] == 32 and calls["input"].min() < -1.0   # (x - 0.5) / 0.25
    from psc6k.errors import Psc6kError
    with pytest.raises(Psc6kError, match="`weights`"):
        load_extractor("timm:fake_net")
    with pytest.raises(Psc6kError, match="not found"):
        load_extractor("timm:fake_net", weights=tmp_path / "missing.pth")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(Psc6kError, match="missing keys"):
        load_extractor("timm:fake_net", weights=tmp_path / "bad.pth")
