"""PCK against independent references: a naive full-upsample implementation kept here,
torch's own F.interpolate when available, and hand-worked cases."""

import numpy as np
import pytest

from psc6k.formats import Annotations
from psc6k.pck import (alpha_key, evaluate, flow_to_pixels, pck_correct, pixels_to_flow, sample_flow,
                       transfer_keypoints)
from psc6k.submission import Submission, identity_flow
from psc6k.testing import make_annotations


SIZE = 256


def naive_upsample(flow, size=SIZE):
    """Materialise the size x size bilinear upsample (align_corners=True) of one [H, W, 2] flow,
    written from the textbook formula, independently of psc6k.pck."""
    h, w, _ = flow.shape
    sy = np.arange(size) * (h - 1) / (size - 1)
    sx = np.arange(size) * (w - 1) / (size - 1)
    y0 = np.minimum(np.floor(sy).astype(int), h - 2)
    x0 = np.minimum(np.floor(sx).astype(int), w - 2)
    fy = (sy - y0)[:, None, None]
    fx = (sx - x0)[None, :, None]
    f00 = flow[y0][:, x0]
    f01 = flow[y0][:, x0 + 1]
    f10 = flow[y0 + 1][:, x0]
    f11 = flow[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * f00 + fx * f01) + fy * ((1 - fx) * f10 + fx * f11)


def naive_pck(flows_s2p, flows_p2s, photo_kps, sketch_kps, alpha, size=SIZE):
    """The paper's loop: upsample each flow, read at rounded keypoints, count, pool at the end."""
    correct = total = 0
    for f_s2p, f_p2s, pk, sk in zip(flows_s2p, flows_p2s, photo_kps, sketch_kps):
        for flow, src, tgt in ((f_s2p, sk, pk), (f_p2s, pk, sk)):
            up = naive_upsample(flow, size)
            for (x, y), (tx, ty) in zip(src, tgt):
                c, r = int(np.clip(np.round(x), 0, size - 1)), int(np.clip(np.round(y), 0, size - 1))
                u, v = up[r, c]
                px, py = (u + 1) * (size - 1) / 2, (v + 1) * (size - 1) / 2
                correct += np.hypot(px - tx, py - ty) <= alpha * size
                total += 1
    return 100.0 * correct / total


def _flows(n, h, w, rng, spread=0.3):
    return identity_flow(n, 2)[:, :1, :1] * 0 + rng.uniform(-1 - spread, 1 + spread, (n, h, w, 2))


@pytest.mark.parametrize("h, w", [(2, 2), (16, 16), (64, 64), (5, 11), (256, 256)])
def test_sample_flow_equals_materialised_upsample(h, w):
    rng = np.random.default_rng(h * 100 + w)
    flows = rng.uniform(-1.5, 1.5, (3, h, w, 2))
    # keypoints at the borders, exact .5 values (round half to even) and random places
    pts = np.array([[0, 0], [255, 255], [0.5, 1.5], [2.5, 3.5], [254.5, 127.5], [255.5, -0.5],
                    [100.49, 100.51], [17.3, 203.9]], dtype=float)
    pts = np.broadcast_to(pts, (3, 8, 2))
    got = sample_flow(flows, pts)
    for n in range(3):
        up = naive_upsample(flows[n])
        for k, (x, y) in enumerate(pts[n]):
            c, r = int(np.clip(np.round(x), 0, 255)), int(np.clip(np.round(y), 0, 255))
            np.testing.assert_allclose(got[n, k], up[r, c], rtol=0, atol=1e-12)


def test_rounding_is_half_to_even():
    # a flow whose value is the x pixel index itself lets us read back the rounded column
    lin = np.linspace(-1, 1, 256)
    flow = np.stack(np.meshgrid(lin, lin), axis=-1)[None]
    pts = np.array([[[0.5, 0], [1.5, 0], [2.5, 0], [3.5, 0], [254.5, 0], [7.49, 0], [7.51, 0], [255.5, 0]]])
    got = transfer_keypoints(flow, pts)[0, :, 0]
    np.testing.assert_allclose(got, [0, 2, 2, 4, 254, 7, 8, 255], atol=1e-9)


def test_matches_torch_interpolate_when_available():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(7)
    flows = rng.uniform(-1, 1, (2, 16, 16, 2))
    pts = rng.uniform(0, 255, (2, 8, 2))
    up = F.interpolate(torch.from_numpy(flows).permute(0, 3, 1, 2), size=(256, 256), mode="bilinear",
                       align_corners=True).permute(0, 2, 3, 1).numpy()
    idx = torch.round(torch.from_numpy(pts)).long().numpy()
    ref = np.stack([up[n, idx[n, :, 1], idx[n, :, 0]] for n in range(2)])
    np.testing.assert_allclose(sample_flow(flows, pts), ref, atol=1e-12)


def _noisy_affine_case(n, h, w, seed, noise_px=25.0):
    """Pairs whose photo keypoints are a random affine map of the sketch keypoints, and flows of
    that map (and its inverse) on an h x w grid plus per-node noise of ``noise_px``: the errors
    are of the order of the thresholds, so PCK@0.05 and PCK@0.10 lie strictly inside (0, 100)."""
    rng = np.random.default_rng(seed)
    base = make_annotations(n_pairs=n, seed=seed)
    xs = np.arange(w) * (SIZE - 1) / (w - 1)
    ys = np.arange(h) * (SIZE - 1) / (h - 1)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)  # (h, w, 2) pixels of the grid nodes
    sk = 40 + base.sketch_kps * (175 / 255)  # keep the mapped points inside the image
    pk, s2p, p2s = np.empty_like(sk), [], []
    for i in range(n):
        m = np.diag(rng.uniform(0.85, 1.15, 2)) + rng.uniform(-0.1, 0.1, (2, 2))
        t = rng.uniform(-25, 25, 2)
        pk[i] = sk[i] @ m.T + t
        inv = np.linalg.inv(m)
        s2p.append((grid @ m.T + t) * (2 / (SIZE - 1)) - 1 + rng.normal(0, noise_px * 2 / (SIZE - 1), (h, w, 2)))
        p2s.append(((grid - t) @ inv.T) * (2 / (SIZE - 1)) - 1 + rng.normal(0, noise_px * 2 / (SIZE - 1), (h, w, 2)))
    ann = Annotations.from_arrays(base.photo, base.sketch, pk, sk)
    return ann, np.stack(s2p), np.stack(p2s)


@pytest.mark.parametrize("h, w", [(2, 2), (16, 16), (9, 23)])
def test_evaluate_equals_naive_protocol(h, w):
    ann, s2p, p2s = _noisy_affine_case(6, h, w, seed=h + w)
    sub = Submission("noisy-affine", "flow", ann.photo, ann.sketch, s2p, p2s)
    alphas = (0.05, 0.10, 0.5)
    res = evaluate(ann, sub, alphas=alphas, n_bootstrap=0)
    for a in alphas:
        naive = naive_pck(s2p, p2s, ann.photo_kps, ann.sketch_kps, a)
        assert res.overall[alpha_key(a)] == pytest.approx(naive, abs=1e-9)
        if a < 0.5:  # a case that scores 0 or 100 could not tell a wrong threshold or lookup apart
            assert 0 < naive < 100, (a, naive)


def test_hand_worked_case_threshold_is_inclusive():
    # Keypoint submission: predictions are the sources themselves, so errors are exactly the shifts.
    sk = np.array([[0.0, 10.0]] * 8)
    shifts = np.array([0, 5, 12.8, 12.81, 20, 25.6, 25.61, 100])
    pk = sk + np.stack([shifts, np.zeros(8)], axis=-1)
    ann = Annotations.from_arrays(["r/photo/x/cat/p.jpg"], ["r/sketch/x/cat/p-1.png"], pk[None], sk[None],
                                  categories=("cat",))
    sub = Submission("kp", "keypoints", ann.photo, ann.sketch, sk[None].copy(), pk[None].copy())
    res = evaluate(ann, sub, n_bootstrap=0)
    # alpha 0.05 -> 12.8 px: shifts 0, 5, 12.8 are hits (<=), in both directions: 3/8
    assert res.overall["pck@0.05"] == 100 * 3 / 8
    assert res.overall["pck@0.10"] == 100 * 6 / 8
    assert res.mean_error_px["overall"] == pytest.approx(shifts.mean(), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.10])
def test_threshold_boundary_exactly_alpha_times_256_is_correct(alpha):
    """SPEC §5: correct when the distance is <= alpha * 256. A point at exactly that distance
    counts, one a nanopixel beyond does not, both in pck_correct and in evaluate."""
    thr = alpha * SIZE
    beyond = thr + 1e-9
    tgt = np.zeros((1, 4, 2))  # offsets from 0 keep the distances exact in floating point
    pred = tgt + np.array([[[thr, 0.0], [0.0, thr], [beyond, 0.0], [0.0, beyond]]])
    assert pck_correct(pred, tgt, alpha).tolist() == [[True, True, False, False]]
    # through evaluate: a keypoint submission whose 8 sketch->photo errors are the distances below
    sk = np.array([[40.0, 0.0]] * 8)
    dists = np.array([0.0, thr, thr, beyond, beyond, 2 * thr, thr / 2, thr])
    pk = sk + np.stack([np.zeros(8), dists], axis=-1)
    np.testing.assert_array_equal(pk[:, 1] - sk[:, 1], dists)  # the distances survive the float arithmetic
    ann = Annotations.from_arrays(["r/photo/x/cat/p.jpg"], ["r/sketch/x/cat/p-1.png"], pk[None], sk[None],
                                  categories=("cat",))
    # sketch->photo predicts the sketch points, photo->sketch the photo points: the same 8 distances
    sub = Submission("kp", "keypoints", ann.photo, ann.sketch, sk[None].copy(), pk[None].copy())
    res = evaluate(ann, sub, alphas=(alpha,), n_bootstrap=0)
    assert res.per_direction["sketch_to_photo"][alpha_key(alpha)] == 100 * 5 / 8
    assert res.overall[alpha_key(alpha)] == 100 * 5 / 8


def test_hand_worked_identity_flow():
    sk = np.array([[10.0, 10.0]] * 8)
    shifts = np.array([0, 5, 12, 13, 20, 25, 26, 100])
    pk = sk + np.stack([shifts, np.zeros(8)], axis=-1)
    ann = Annotations.from_arrays(["r/photo/x/cat/p.jpg"], ["r/sketch/x/cat/p-1.png"], pk[None], sk[None],
                                  categories=("cat",))
    sub = Submission("id", "flow", ann.photo, ann.sketch, identity_flow(1, 16), identity_flow(1, 16))
    res = evaluate(ann, sub, n_bootstrap=0)
    assert res.overall["pck@0.05"] == pytest.approx(100 * 3 / 8)
    assert res.overall["pck@0.10"] == pytest.approx(100 * 6 / 8)
    assert res.per_direction["sketch_to_photo"]["pck@0.10"] == pytest.approx(75.0)
    # the identity flow moves (10, 10) to (10, 10) up to float rounding
    np.testing.assert_allclose(res.pred["sketch_to_photo"][0], sk, atol=1e-9)


def test_keypoint_submission_and_pooling_over_pairs():
    ann = make_annotations(n_pairs=10, seed=3)
    # pair i: i of the 8 sketch->photo keypoints exact, the rest 100 px off; photo->sketch all exact
    s2p = ann.photo_kps.copy()
    for i in range(10):
        s2p[i, min(i, 8):] += 100.0
    sub = Submission("kp", "keypoints", ann.photo, ann.sketch, s2p, ann.sketch_kps.copy())
    res = evaluate(ann, sub, n_bootstrap=200)
    expected_s2p = 100 * sum(min(i, 8) for i in range(10)) / 80
    assert res.per_direction["sketch_to_photo"]["pck@0.05"] == pytest.approx(expected_s2p)
    assert res.per_direction["photo_to_sketch"]["pck@0.05"] == 100.0
    # the pooled number equals the mean of per-pair PCKs (all pairs carry 8 keypoints)
    assert res.overall["pck@0.05"] == pytest.approx(np.mean(res.per_pair_pck["pck@0.05"]) * 100)
    assert res.overall["pck@0.05"] == pytest.approx((expected_s2p + 100) / 2)
    lo, hi = res.ci95["pck@0.05"]
    assert lo < res.overall["pck@0.05"] < hi
    # per-category numbers are each category's own mean, not the last pair's
    for cat, row in res.per_category.items():
        rows = [i for i in range(10) if ann.category[i] == cat]
        want = 100 * np.mean([(min(i, 8) + 8) / 16 for i in rows])
        assert row["pck@0.05"] == pytest.approx(want) and row["n_pairs"] == len(rows)


def test_flow_outside_unit_square_misses_but_is_legal():
    ann = make_annotations(n_pairs=2)
    far = np.full((2, 4, 4, 2), 5.0)
    res = evaluate(ann, Submission("far", "flow", ann.photo, ann.sketch, far, far), n_bootstrap=0)
    assert res.overall["pck@0.10"] == 0.0


def test_perfect_flow_scores_100():
    ann = make_annotations(n_pairs=4)
    # a flow field sampled from the exact constant translation of each pair
    sub_flows = []
    for i in range(4):
        shift = ann.photo_kps[i, 0] - ann.sketch_kps[i, 0]
        base = identity_flow(1, 256)[0]
        sub_flows.append(pixels_to_flow(flow_to_pixels(base) + shift))
    s2p = np.stack(sub_flows)
    sk = ann.sketch_kps.copy()
    sk[:] = sk[:, :1]  # all keypoints of a pair at one place: a translation maps them exactly
    pk = sk + (ann.photo_kps[:, :1] - ann.sketch_kps[:, :1])
    ann2 = Annotations.from_arrays(ann.photo, ann.sketch, pk, np.round(sk))
    ann2.photo_kps = np.round(sk) + (ann.photo_kps[:, :1] - ann.sketch_kps[:, :1])
    res = evaluate(ann2, Submission("t", "flow", ann.photo, ann.sketch, s2p, identity_flow(4, 8)), n_bootstrap=0)
    assert res.per_direction["sketch_to_photo"]["pck@0.05"] == 100.0


def test_alpha_keys():
    assert [alpha_key(a) for a in (0.05, 0.1, 0.125, 0.2, 0.01)] == \
        ["pck@0.05", "pck@0.10", "pck@0.125", "pck@0.20", "pck@0.01"]


def test_bootstrap_ci_matches_naive_pair_resampling():
    from psc6k.pck import bootstrap_ci

    rng = np.random.default_rng(11)
    per_pair = rng.integers(0, 17, 300) / 16
    lo, hi = bootstrap_ci(per_pair, 4000, seed=1)
    # naive reference: resample pairs with replacement
    idx = np.random.default_rng(2).integers(0, 300, (4000, 300))
    nlo, nhi = np.percentile(per_pair[idx].mean(axis=1) * 100, [2.5, 97.5])
    assert abs(lo - nlo) < 0.6 and abs(hi - nhi) < 0.6
    assert lo < per_pair.mean() * 100 < hi
    assert bootstrap_ci(np.full(50, 0.5), 100) == [50.0, 50.0]


def test_non_contiguous_and_float32_flows_give_the_same_values():
    rng = np.random.default_rng(4)
    flows = rng.uniform(-1, 1, (3, 6, 9, 2))
    pts = rng.uniform(0, 255, (3, 8, 2))
    ref = sample_flow(flows, pts)
    swapped = np.ascontiguousarray(flows.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # a strided view
    assert not swapped.flags.c_contiguous
    np.testing.assert_array_equal(sample_flow(swapped, pts), ref)
    np.testing.assert_allclose(sample_flow(flows.astype(np.float32), pts), ref, atol=1e-6)
    np.testing.assert_array_equal(sample_flow(flows[::-1], pts[::-1], index=None)[::-1], ref)
    np.testing.assert_array_equal(sample_flow(flows, pts[[2, 0]], index=[2, 0]), ref[[2, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_table_equals_the_naive_loop_on_its_subset(seed):
    """Property: per direction and per category, PCK equals the naive upsample-everything loop run
    on just those flows / pairs, for a shuffled, partial submission of float32 flows."""
    h, w = (16, 16) if seed == 0 else (5 + seed, 9)
    ann, s2p, p2s = _noisy_affine_case(20, h, w, seed=seed)
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(ann))[:15]  # partial and out of order
    sub = Submission("m", "flow", [ann.photo[i] for i in keep], [ann.sketch[i] for i in keep],
                     s2p[keep].astype(np.float32), p2s[keep].astype(np.float32))
    alphas = (0.05, 0.10)
    res = evaluate(ann, sub, alphas=alphas, n_bootstrap=0, allow_partial=True)
    f32 = {"s2p": s2p.astype(np.float32), "p2s": p2s.astype(np.float32)}
    cats = sorted({ann.category[i] for i in keep}, key=list(ann.categories).index)
    assert list(res.per_category) == cats
    for a in alphas:
        key = alpha_key(a)
        for cat in cats:
            rows = sorted(i for i in keep if ann.category[i] == cat)
            naive = naive_pck(f32["s2p"][rows], f32["p2s"][rows], ann.photo_kps[rows], ann.sketch_kps[rows], a)
            assert res.per_category[cat]["n_pairs"] == len(rows)
            assert res.per_category[cat][key] == pytest.approx(naive, abs=1e-9)
        rows = sorted(keep)
        away = np.full_like(f32["p2s"][rows], 1e3)  # points far off the image: never within a threshold
        s2p_only = naive_pck(f32["s2p"][rows], away, ann.photo_kps[rows], ann.sketch_kps[rows], a)
        assert res.per_direction["sketch_to_photo"][key] == pytest.approx(2 * s2p_only, abs=1e-9)
        assert res.overall[key] == pytest.approx(
            naive_pck(f32["s2p"][rows], f32["p2s"][rows], ann.photo_kps[rows], ann.sketch_kps[rows], a), abs=1e-9)
