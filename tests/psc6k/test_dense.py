"""Dense metrics (AEPE, dense PCK, sparsification / AUSE) against hand-worked cases and naive loops."""

import json

import numpy as np
import pytest

from psc6k.dense import (ause, endpoint_errors, evaluate_dense, sparsification_curves, upsample_flows_px,
                         upsample_maps)
from psc6k.pck import flow_to_pixels, pixels_to_flow
from psc6k.submission import Submission, identity_flow

from tests.psc6k.test_pck import naive_upsample


def _sub(flows_s2p, flows_p2s, name="m", n=None):
    n = len(flows_s2p)
    photo = [f"rendered_256x256/256x256/photo/tx_000100000000/cat/p{i}.jpg" for i in range(n)]
    sketch = [f"rendered_256x256/256x256/sketch/tx_000100000000/cat/p{i}-1.png" for i in range(n)]
    return Submission(name, "flow", photo, sketch, flows_s2p, flows_p2s)


def test_upsampling_is_the_official_bilinear_reading():
    rng = np.random.default_rng(0)
    flows = rng.uniform(-1, 1, (2, 5, 7, 2))
    got = upsample_flows_px(flows)
    for i in range(2):
        np.testing.assert_allclose(got[i], flow_to_pixels(naive_upsample(flows[i])), atol=1e-9)
    maps = rng.uniform(0, 1, (2, 5, 7))
    np.testing.assert_allclose(upsample_maps(maps)[1], naive_upsample(np.repeat(maps[1][..., None], 2, -1))[..., 0],
                               atol=1e-12)


def test_hand_worked_constant_shift_and_off_image_targets():
    gt = identity_flow(1, 256)
    shift = 3.0
    pred = pixels_to_flow(flow_to_pixels(gt) + [shift, 0.0])
    epe, valid = endpoint_errors(pred, gt)
    assert valid.all()
    np.testing.assert_allclose(epe, shift, atol=1e-9)
    # ground truth 100 px to the right: columns x >= 156 map off the target image and do not count
    gt_off = pixels_to_flow(flow_to_pixels(gt) + [100.0, 0.0])
    _, valid = endpoint_errors(pred, gt_off)
    assert valid.sum() == 156 * 256 and valid[:, :, :156].all() and not valid[:, :, 156:].any()
    res = evaluate_dense(_sub(pred, gt.copy()), _sub(gt, gt.copy()), alphas=(0.01, 0.05))
    # sketch_to_photo: 3 px everywhere (> 2.56 px, <= 12.8 px); photo_to_sketch exact
    assert res.per_direction["sketch_to_photo"]["aepe"] == pytest.approx(3.0)
    assert res.per_direction["sketch_to_photo"]["dense_pck@0.01"] == 0.0
    assert res.per_direction["sketch_to_photo"]["dense_pck@0.05"] == 100.0
    assert res.per_direction["photo_to_sketch"]["aepe"] == pytest.approx(0.0, abs=1e-9)
    assert res.overall["aepe"] == pytest.approx(1.5)
    assert res.overall["dense_pck@0.01"] == pytest.approx(50.0)


def test_per_image_and_pooled_averaging_differ_as_defined():
    gt = identity_flow(2, 256)
    pred = gt.copy()
    pred[0] = pixels_to_flow(flow_to_pixels(gt[0]) + [4.0, 0.0])
    gt_off = gt.copy()
    gt_off[1] = pixels_to_flow(flow_to_pixels(gt[1]) + [128.0, 0.0])  # half of pair 1 invalid
    pred[1] = pixels_to_flow(flow_to_pixels(gt_off[1]) + [0.0, 2.0])
    res = evaluate_dense(_sub(pred, gt.copy()), _sub(gt_off, gt.copy()))
    s2p = res.per_direction["sketch_to_photo"]
    assert s2p["aepe"] == pytest.approx((4.0 + 2.0) / 2)                       # mean of per-image means
    n0, n1 = 256 * 256, 128 * 256
    assert s2p["aepe_pooled"] == pytest.approx((4.0 * n0 + 2.0 * n1) / (n0 + n1))  # over valid pixels


def naive_sparsification(e, c, steps):
    out_c, out_o = [], []
    full = np.mean(e)
    for k in range(steps):
        remove = int(np.floor(k / steps * len(e)))
        order = sorted(range(len(e)), key=lambda i: (-c[i], i))       # most confident first, stable
        kept = [e[i] for i in order[:len(e) - remove]]
        out_c.append(np.mean(kept) / full)
        out_o.append(np.mean(sorted(e)[:len(e) - remove]) / full)
    return np.array(out_c), np.array(out_o)


def test_sparsification_and_ause_against_naive_loops():
    rng = np.random.default_rng(1)
    e = rng.exponential(5, (3, 37))
    c = np.round(rng.normal(size=(3, 37)), 1)   # rounded: confidence ties occur
    valid = rng.random((3, 37)) > 0.2
    f, curve, oracle = sparsification_curves(e, c, valid, steps=10)
    for m in range(3):
        nc, no = naive_sparsification(e[m][valid[m]], c[m][valid[m]], 10)
        np.testing.assert_allclose(curve[m], nc, atol=1e-12)
        np.testing.assert_allclose(oracle[m], no, atol=1e-12)
        area = sum((f[k + 1] - f[k]) * ((nc - no)[k] + (nc - no)[k + 1]) / 2 for k in range(9))
        assert ause(f, curve, oracle)[m] == pytest.approx(area, abs=1e-12)
    assert (curve >= oracle - 1e-12).all()   # nothing beats the oracle


def test_ause_extremes():
    e = np.arange(1.0, 101.0)[None]
    f, perfect, oracle = sparsification_curves(e, -e)
    assert ause(f, perfect, oracle)[0] == pytest.approx(0.0, abs=1e-12)
    f, worst, oracle = sparsification_curves(e, e)          # most confident where the error is largest
    assert ause(f, worst, oracle)[0] > 0.5
    f, flat, oracle = sparsification_curves(e, np.zeros_like(e))  # ties kept in pixel order = ascending e
    assert ause(f, flat, oracle)[0] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_dense_with_confidence_and_errors():
    rng = np.random.default_rng(2)
    gt = identity_flow(3, 16)
    noise = rng.normal(0, 0.05, gt.shape)
    pred = gt + noise
    good = -np.linalg.norm(noise, axis=-1)          # confidence = minus the coarse error: ranks well
    conf = {"sketch_to_photo": good, "photo_to_sketch": rng.random((3, 16, 16))}
    res = evaluate_dense(_sub(pred, pred.copy()), _sub(gt, gt.copy()), confidence=conf)
    assert res.per_direction["sketch_to_photo"]["ause"] < res.per_direction["photo_to_sketch"]["ause"]
    sp = res.sparsification
    assert len(sp["fractions"]) == 50 and sp["sketch_to_photo"]["curve"][0] == pytest.approx(1.0)
    from psc6k.errors import SubmissionError
    kp = Submission("kp", "keypoints", ["a"], ["b"], np.zeros((1, 8, 2)), np.zeros((1, 8, 2)))
    with pytest.raises(SubmissionError, match="flow submission"):
        evaluate_dense(kp, _sub(gt, gt))
    other = _sub(gt, gt)
    other.photo = ["x"] * 3
    with pytest.raises(SubmissionError, match="no submitted pair"):
        evaluate_dense(_sub(pred, pred), other)


def test_eval_cli_dense_gt_on_the_bundled_sample(tmp_path, capsys):
    from psc6k.cli import main
    from psc6k.data import sample_path
    from psc6k.submission import load_submission, save_submission

    gt_path = sample_path() / "gt_flows.npz"
    gt = load_submission(gt_path)
    ident = _sub(identity_flow(len(gt), 16), identity_flow(len(gt), 16), name="identity")
    ident.photo, ident.sketch = gt.photo, gt.sketch
    save_submission(ident, tmp_path / "identity.npz")
    save_submission(gt, tmp_path / "gt.npz")
    ann = str(sample_path() / "test_pairs_ps.csv")
    assert main(["eval", str(tmp_path / "gt.npz"), "-a", ann, "--dense-gt", str(gt_path), "--json",
                 "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dense"]["overall"]["aepe"] == pytest.approx(0.0, abs=1e-3)
    assert out["dense"]["overall"]["dense_pck@0.05"] == pytest.approx(100.0)
    assert main(["eval", str(tmp_path / "identity.npz"), "-a", ann, "--dense-gt", str(gt_path),
                 "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert "AEPE" in text
    assert main(["eval", str(tmp_path / "identity.npz"), "-a", ann, "--dense-gt", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_eval_cli_scores_npz_confidence_maps(tmp_path, capsys):
    from psc6k.cli import main
    from psc6k.data import sample_path
    from psc6k.submission import load_submission

    from psc6k.formats import read_annotations, write_test_pairs_ps

    gt_path = sample_path() / "gt_flows.npz"
    gt = load_submission(gt_path)
    keep = list(range(6))  # a few pairs keep the test fast
    gt.photo, gt.sketch = [gt.photo[i] for i in keep], [gt.sketch[i] for i in keep]
    gt.sketch_to_photo, gt.photo_to_sketch = np.asarray(gt.sketch_to_photo)[keep], np.asarray(gt.photo_to_sketch)[keep]
    full_ann = read_annotations(sample_path() / "test_pairs_ps.csv")
    idx = full_ann.index()
    write_test_pairs_ps(full_ann.subset([idx[p] for p in zip(gt.photo, gt.sketch)]), tmp_path / "pairs.csv")
    n = len(gt)
    rng = np.random.default_rng(4)
    flows = {d: np.asarray(getattr(gt, d)) + rng.normal(0, 0.03, np.shape(getattr(gt, d))) for d in
             ("sketch_to_photo", "photo_to_sketch")}
    # sketch_to_photo: confidence = minus the true error (ranks well); photo_to_sketch: noise
    conf = {"sketch_to_photo": -np.linalg.norm(flows["sketch_to_photo"] - np.asarray(gt.sketch_to_photo), axis=-1),
            "photo_to_sketch": rng.random((n, 32, 32))}
    path = tmp_path / "with_conf.npz"
    np.savez(path, photo=np.array(gt.photo), sketch=np.array(gt.sketch), method=np.array("noisy"),
             kind=np.array("flow"), **flows, **{f"{d}_confidence": c for d, c in conf.items()})
    ann = str(tmp_path / "pairs.csv")
    assert main(["eval", str(path), "-a", ann, "--dense-gt", str(gt_path), "--json", "--bootstrap", "0"]) == 0
    dense = json.loads(capsys.readouterr().out)["dense"]
    s2p, p2s = dense["per_direction"]["sketch_to_photo"], dense["per_direction"]["photo_to_sketch"]
    assert 0 <= s2p["ause"] < p2s["ause"]
    assert len(dense["sparsification"]["fractions"]) == 50
    one = tmp_path / "one_direction.npz"
    np.savez(one, photo=np.array(gt.photo), sketch=np.array(gt.sketch), **flows,
             sketch_to_photo_confidence=conf["sketch_to_photo"])
    assert main(["eval", str(one), "-a", ann, "--dense-gt", str(gt_path), "--bootstrap", "0"]) == 2
    assert "photo_to_sketch_confidence" in capsys.readouterr().err
