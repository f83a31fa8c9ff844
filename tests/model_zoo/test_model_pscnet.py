"""PSCNet forward pass, flow convention and training losses (small CPU inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from model_zoo.losses import affinity, compose_flows, consistency_loss, similarity_loss  # noqa: E402
from model_zoo.pscnet import PHOTO, SKETCH  # noqa: E402
from model_zoo.stn import correlation, identity_grid  # noqa: E402
from model_zoo.testing import tiny_model, zero_residuals  # noqa: E402
from model_zoo.train import EncoderObjective, EstimatorObjective  # noqa: E402

torch.set_num_threads(2)


def test_identity_grid_is_the_spec_convention():
    grid = identity_grid(16)[0].numpy()
    # entry [i, j] = (u, v) of pixel (row i, col j); pixel x = (u + 1) * 255 / 2
    assert grid.shape == (16, 16, 2)
    assert grid[0, 15].tolist() == [1.0, -1.0]  # top-right: x = right edge, y = top
    assert grid[15, 0].tolist() == [-1.0, 1.0]
    np.testing.assert_allclose(grid[3, 7], [-1 + 2 * 7 / 15, -1 + 2 * 3 / 15], atol=1e-6)


def test_correlation_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    corr = correlation(t, s)
    assert corr.shape == (2, 12, 3, 4)
    for n in range(2):
        for r in range(3):
            for c in range(4):
                for i in range(3):
                    for j in range(4):
                        expected = float((t[n, :, r, c] * s[n, :, i, j]).sum())
                        assert math.isclose(float(corr[n, r * 4 + c, i, j]), expected, rel_tol=1e-5, abs_tol=1e-5)


def test_predict_flows_shapes_and_zero_residuals_give_identity():
    model = zero_residuals(tiny_model()).eval()
    photo, sketch = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        s2p, p2s = model.predict_flows(photo, sketch)
    assert s2p.shape == p2s.shape == (3, 8, 8, 2)
    ident = identity_grid(8).expand(3, -1, -1, -1)
    assert torch.equal(s2p, ident) and torch.equal(p2s, ident)


def test_predict_flows_direction_convention():
    """sketch_to_photo = stn(photo_feats, sketch_feats) (SPEC §5), photo_to_sketch the reverse."""
    model = tiny_model().eval()
    calls = []  # (source, target) of every estimator call
    encode, estimate = model.encode, model.estimate

    def tagged_encode(images, condition):
        feats = encode(images, condition)
        feats["tag"] = "photo" if condition == PHOTO else "sketch"
        return feats

    def tagged_estimate(source, target, return_all=False):
        calls.append((source["tag"], target["tag"]))
        return estimate({k: v for k, v in source.items() if k != "tag"},
                        {k: v for k, v in target.items() if k != "tag"})

    model.encode, model.estimate = tagged_encode, tagged_estimate
    with torch.no_grad():
        model.predict_flows(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert calls == [("photo", "sketch"), ("sketch", "photo")]


def test_estimator_flow_points_into_the_source():
    """A hand-set STN whose first block outputs a constant residual shifts the flow by it: the
    target grid reads the source at base + residual, and warp(source, flow) samples there."""
    model = zero_residuals(tiny_model()).eval()
    last = [m for m in model.stn.net_2x if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.25, -0.5]))
        feats = model.encode(torch.rand(1, 3, 64, 64), PHOTO)
        flow = model.estimate(feats, feats)
    expected = identity_grid(8) + torch.tensor([0.25, -0.5])
    torch.testing.assert_close(flow, expected)


def test_consistency_loss_zero_for_exact_inverse_pair():
    base = identity_grid(16)
    a = torch.tensor([[0.8, 0.1], [-0.05, 0.9]])
    t = torch.tensor([0.05, -0.1])
    flow_ab = base @ a.T + t                      # B -> A
    flow_ba = (base - t) @ torch.linalg.inv(a).T  # A -> B, exact inverse
    assert float(consistency_loss(flow_ab, flow_ba)) < 1e-10
    torch.testing.assert_close(compose_flows(flow_ab, flow_ba)[(flow_ba.abs() <= 1).all(-1)],
                               base[(flow_ba.abs() <= 1).all(-1)], atol=1e-5, rtol=0)
    # a flow and itself are not inverse: positive loss
    assert float(consistency_loss(flow_ab, flow_ab)) > 1e-3
    assert float(consistency_loss(base, base)) < 1e-12


def test_similarity_loss_matches_naive_reference():
    g = torch.Generator().manual_seed(1)
    warped = {"layer2": torch.rand(2, 3, 4, 4, generator=g), "layer3": torch.rand(2, 5, 2, 2, generator=g)}
    target = {"layer2": torch.rand(2, 3, 4, 4, generator=g), "layer3": torch.rand(2, 5, 2, 2, generator=g)}
    tau, size = 0.05, 4
    loss = similarity_loss(warped, target, (2, 3), size, tau)

    # naive: per pair, per source position i: -log softmax_j(A[i, j] / tau)[i] * weight_i
    def stack(feats):
        return torch.cat([F.interpolate(feats[k], (size, size), mode="bilinear", align_corners=False)
                          for k in ("layer2", "layer3")], 1)
    a, b = stack(warped).flatten(2), stack(target).flatten(2)
    terms, weights = [], []
    for n in range(2):
        raw = a[n].T @ b[n]                          # [P, P]
        raw = raw / raw.abs().sum(0, keepdim=True)   # L1 over source positions
        raw = raw / raw.abs().sum(1, keepdim=True)   # then over target positions
        for i in range(size * size):
            terms.append(-torch.log_softmax(raw[i] / tau, 0)[i])
            weights.append(raw[i].max())
    w = torch.stack(weights)
    w = (w - w.min()) / (w.max() - w.min())
    expected = (torch.stack(terms) * w).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert affinity(warped, target, (2, 3), size).shape == (2, 16, 16)


def test_estimator_gradients_reach_encoder_and_stn():
    model = tiny_model().train()
    objective = EstimatorObjective(model, warp_strength=0.5)
    photo, sketch = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses = objective(photo, sketch, step=0)
    assert set(losses) >= {"loss", "sim", "con"}
    losses["loss"].backward()
    enc = [p.grad for p in model.encoder_q.layer2.parameters()]
    stn = [p.grad for p in model.stn.net_2x.parameters()] + [p.grad for p in model.stn.net_8x.parameters()]
    assert all(g is not None for g in enc + stn)
    assert sum(float(g.abs().sum()) for g in enc) > 0
    assert sum(float(g.abs().sum()) for g in stn) > 0
    assert all(p.grad is None for p in model.encoder_k.parameters())  # the momentum copy is not trained


def _smooth_pairs(n=4, size=64, seed=0):
    """Structured inputs (random low-frequency photos, their gray version as the 'sketch')."""
    g = torch.Generator().manual_seed(seed)
    photo = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), (size, size), mode="bicubic",
                          align_corners=False).clamp(0, 1)
    return photo, photo.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def _steps(objective, params, photo, sketch, n, lr):
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    values = []
    for _ in range(n):
        torch.manual_seed(123)  # same augmentation every step: a fixed problem
        losses = objective(photo, sketch, step=0)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        values.append(float(losses["loss"].detach()))
    return values


def test_estimator_losses_decrease_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_model().train()
    objective = EstimatorObjective(model, warp_strength=0.5)
    photo, sketch = _smooth_pairs()
    values = _steps(objective, list(model.stn.parameters()), photo, sketch, 5, lr=0.001)
    assert values[-1] < 0.9 * values[0], values


def test_encoder_moco_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_model(moco_queue=4096).train()
    objective = EncoderObjective(model, warp_strength=0.5)
    photo, sketch = _smooth_pairs()
    # a fixed problem: the same negatives every step (else the queue fills with these very keys)
    queue = model.framework.queue.clone()
    def reset_queue(module, _inputs):
        module.queue.copy_(queue)

    model.framework.register_forward_pre_hook(reset_queue)
    values = _steps(objective, model.encoder_parameters(), photo, sketch, 5, lr=0.05)
    assert values[-1] < values[0], values


def test_moco_queue_wraps_and_stays_normalised():
    model = tiny_model(moco_queue=6)
    fw = model.framework
    keys = F.normalize(torch.randn(4, fw.queue.shape[0]), dim=1)
    fw._enqueue(keys)
    fw._enqueue(keys)
    assert int(fw.queue_ptr) == 2
    torch.testing.assert_close(fw.queue[:, 4:6].T, keys[:2])
    torch.testing.assert_close(fw.queue[:, 0:2].T, keys[2:4])


def test_bottleneck_and_dilation_configurations_run():
    model = tiny_model(arch="resnet50", width=4, replace_stride_with_dilation=(False, True, False)).eval()
    with torch.no_grad():
        feats = model.encode_all(torch.rand(1, 3, 64, 64), SKETCH)
        s2p, _ = model.predict_flows(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert feats["layer3"].shape[-1] == feats["layer2"].shape[-1]  # dilated stage keeps the resolution
    assert feats["layer4"].shape[1] == 4 * 8 * 4
    assert s2p.shape == (1, 8, 8, 2)


def test_normalised_correlation_is_cosine_similarity():
    """corr_normalize (not in the released models): every position matches itself with score 1."""
    model = tiny_model(corr_normalize=True).eval()
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 3, 64, 64), PHOTO)
        resized = model.stn.resize(feats)
        corr = model.stn.correlate(resized, resized)  # [1, 2 * 64, 8, 8]
    p = model.config.feat_size ** 2
    for layer in range(2):
        block = corr[0, layer * p:(layer + 1) * p].reshape(p, p)  # [target position, source position]
        torch.testing.assert_close(block.diagonal(), torch.ones(p), atol=1e-5, rtol=0)
        assert float(block.max()) <= 1 + 1e-5
    assert not tiny_model().stn.normalize  # released behaviour by default
