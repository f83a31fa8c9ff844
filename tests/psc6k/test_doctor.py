"""psc6k doctor: exact synthetic flows corrupted by each SPEC §9 mistake and every pair of them;
the top suspect must be the applied mistake(s), and its fix — the printed NumPy line, executed —
must restore the score."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from psc6k.data import sample_path
from psc6k.doctor import candidate_fixes, diagnose, fix_name, useful_fixes
from psc6k.formats import read_annotations
from psc6k.pck import evaluate
from psc6k.submission import Submission, identity_flow, load_submission, save_submission

SPEC_MISTAKES = ("swap_xy", "swap_directions", "pixel_units", "transposed_grid", "align_corners_false")
#: PCK cannot see align_corners_false (it moves points by at most half a pixel, SPEC §9 algebra):
#: its expected suspect is the rest of the combination.
INVISIBLE = {"align_corners_false"}


@pytest.fixture(scope="module")
def sample():
    root = sample_path()
    return read_annotations(root / "test_pairs_ps.csv"), load_submission(root / "gt_flows.npz")


def corrupt(sub: Submission, mistakes) -> Submission:
    """Apply the mistakes as SPEC §9 words them, independently of psc6k.doctor."""
    out = copy.copy(sub)

    def one(flow):
        flow = flow.astype(np.float64)
        if "transposed_grid" in mistakes:       # flow[i, j] holds pixel (x = i, y = j)
            flow = flow.transpose(0, 2, 1, 3)
        if "swap_xy" in mistakes:               # last axis (v, u)
            flow = flow[..., ::-1]
        pixels = (flow + 1) * (256 - 1) / 2     # where each point truly lands, in pixels
        if "pixel_units" in mistakes:
            flow = pixels
        elif "align_corners_false" in mistakes:  # x = ((u + 1) * 256 - 1) / 2 solved for u
            flow = (2 * pixels + 1) / 256 - 1
        return np.ascontiguousarray(flow)

    out.sketch_to_photo, out.photo_to_sketch = one(sub.sketch_to_photo), one(sub.photo_to_sketch)
    if "swap_directions" in mistakes:
        out.sketch_to_photo, out.photo_to_sketch = out.photo_to_sketch, out.sketch_to_photo
    return out


def apply_printed_fix(sub: Submission, numpy_lines) -> Submission:
    """Execute the doctor's NumPy lines, as a user would paste them."""
    env = {"np": np, "sketch_to_photo": sub.sketch_to_photo, "photo_to_sketch": sub.photo_to_sketch}
    for line in numpy_lines:
        if line.startswith("flow ="):
            for d in ("sketch_to_photo", "photo_to_sketch"):
                scope = {"np": np, "flow": env[d]}
                exec(line, scope)
                env[d] = scope["flow"]
        else:
            exec(line, env)
    out = copy.copy(sub)
    out.sketch_to_photo = np.ascontiguousarray(env["sketch_to_photo"])
    out.photo_to_sketch = np.ascontiguousarray(env["photo_to_sketch"])
    return out


COMBOS = [c for r in (1, 2) for c in itertools.combinations(SPEC_MISTAKES, r)
          if not {"pixel_units", "align_corners_false"} <= set(c)]


@pytest.mark.parametrize("mistakes", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_top_suspect_is_the_applied_mistake(sample, mistakes):
    ann, gt = sample
    truth = evaluate(ann, gt, n_bootstrap=0).overall
    bad = corrupt(gt, mistakes)
    diag = diagnose(ann, bad)
    visible = set(mistakes) - INVISIBLE
    if not visible:  # align_corners_false alone: the score is (and stays) right
        assert diag.ok and (diag.top is None or diag.top["gain"] <= 0.5)
        assert diag.pck == pytest.approx(truth)
        return
    assert not diag.ok
    top = diag.top
    assert top["fix"] == fix_name(visible)
    assert {k: top[k] for k in truth} == pytest.approx(truth)
    fixed = apply_printed_fix(bad, top["numpy"])
    assert evaluate(ann, fixed, n_bootstrap=0).overall == pytest.approx(truth, abs=0.5)


def test_correct_flows_are_ok_and_exit_0(sample, tmp_path):
    root = sample_path()
    r = subprocess.run([sys.executable, "-m", "psc6k", "doctor", str(root / "gt_flows.npz"), "--annotations",
                        str(root / "test_pairs_ps.csv"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["pck"]["pck@0.10"] == 100.0
    assert all(s["gain"] <= 0.5 for s in out["suspects"])


def test_cli_names_the_fix_in_words_and_numpy_and_exits_1(sample, tmp_path):
    ann, gt = sample
    save_submission(corrupt(gt, ("swap_xy", "swap_directions")), tmp_path / "bad.npz")
    args = [sys.executable, "-m", "psc6k", "doctor", str(tmp_path / "bad.npz"), "--annotations", str(sample_path() / "test_pairs_ps.csv")]
    r = subprocess.run(args + ["--json"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is False
    top = out["suspects"][0]
    assert top["fix"] == "swap_directions+swap_xy" and top["pck@0.10"] == 100.0 and top["gain"] > 90
    gains = [s["gain"] for s in out["suspects"]]
    assert gains == sorted(gains, reverse=True) and min(gains) > 0
    text = subprocess.run(args, capture_output=True, text=True)
    assert text.returncode == 1
    assert "SUSPECT: swap_directions+swap_xy" in text.stdout
    assert "exchange the two directions, then swap the last axis back to (x, y)" in text.stdout
    assert "flow = flow[..., ::-1]" in text.stdout
    assert "sketch_to_photo, photo_to_sketch = photo_to_sketch, sketch_to_photo" in text.stdout


def test_threshold_decides_the_verdict(sample):
    ann, gt = sample
    bad = corrupt(gt, ("swap_xy",))
    gain = diagnose(ann, bad).top["gain"]
    assert diagnose(ann, bad, threshold=gain - 0.01).ok is False
    assert diagnose(ann, bad, threshold=gain).ok is True  # "more than" the threshold


def test_degenerate_flows_are_flagged(sample):
    ann, gt = sample
    n = len(gt)
    sub = copy.copy(gt)
    sub.sketch_to_photo = identity_flow(n, 16)
    sub.photo_to_sketch = np.full((n, 16, 16, 2), 0.25)
    sub.photo_to_sketch[0, 0, 0, 0] = 7.0  # one value far outside (|u| > 2)
    warnings = diagnose(ann, sub).warnings
    assert f"sketch_to_photo: {n} of {n} flows are the identity (each pixel mapped to itself)" in warnings
    assert f"photo_to_sketch: {n - 1} of {n} flows are constant (every point mapped to one place)" in warnings
    assert any(w.startswith("photo_to_sketch: 1 of ") and "far outside" in w for w in warnings)
    assert not any("far outside" in w for w in diagnose(ann, gt).warnings)


def test_keypoint_submissions_swap_xy(sample):
    ann, _ = sample
    sub = Submission("kp", "keypoints", list(ann.photo), list(ann.sketch), ann.photo_kps[..., ::-1].copy(),
                     ann.sketch_kps[..., ::-1].copy())
    diag = diagnose(ann, sub)
    assert diag.top["fix"] == "swap_xy" and diag.top["numpy"] == ["pred = pred[..., ::-1]"]
    assert diag.top["pck@0.10"] == 100.0


def test_candidates_and_names():
    flows = {fix_name(c) for c in candidate_fixes("flow")}
    assert len(flows) == 23 and "align_corners_false+pixel_units" not in flows
    assert fix_name(["transposed_grid", "swap_xy", "pixel_units"]) == "pixel_units+swap_xy+transposed_grid"


def test_a_mistake_joins_a_fix_only_when_it_adds_more_than_half_a_point():
    xy, ac, d = frozenset({"swap_xy"}), frozenset({"align_corners_false"}), frozenset({"swap_directions"})
    gains = {xy: 40.0, ac: 0.2, d: -3.0, xy | ac: 40.4, xy | d: 41.0, ac | d: 0.0}
    assert set(useful_fixes(gains)) == {xy, ac, xy | d}  # xy|ac adds 0.4 over xy: dropped; xy|d adds 1.0
    assert set(useful_fixes(gains, min_extra=1.0)) == {xy, ac}
    assert useful_fixes({xy | d: 90.0, xy: -5.0, d: -1.0}) == [xy | d]  # only both together help


@pytest.mark.parametrize("mistake", SPEC_MISTAKES)
def test_each_printed_fix_inverts_its_mistake_exactly(sample, mistake):
    # PCK cannot see align_corners_false, so check the arrays themselves: the printed NumPy line
    # undoes the SPEC §9 mistake, and the doctor's own reading of the fixed flow gives the true pixels
    from psc6k.doctor import _fixed_predictions, _read_samples, fix_numpy
    from psc6k.pck import transfer_keypoints

    ann, gt = sample
    bad = corrupt(gt, (mistake,))
    fixed = apply_printed_fix(bad, fix_numpy([mistake]))
    np.testing.assert_allclose(fixed.sketch_to_photo, gt.sketch_to_photo, atol=1e-5)
    np.testing.assert_allclose(fixed.photo_to_sketch, gt.photo_to_sketch, atol=1e-5)
    rows = np.arange(len(ann))
    pred = _fixed_predictions(_read_samples(ann, bad, rows), frozenset({mistake}))
    np.testing.assert_allclose(pred["sketch_to_photo"], transfer_keypoints(gt.sketch_to_photo, ann.sketch_kps), atol=1e-3)
    np.testing.assert_allclose(pred["photo_to_sketch"], transfer_keypoints(gt.photo_to_sketch, ann.photo_kps), atol=1e-3)


def test_bad_threshold_and_unreadable_submission_are_one_line(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"garbage")
    csv = str(sample_path() / "test_pairs_ps.csv")
    for args in ([str(sample_path() / "gt_flows.npz"), "--threshold", "-1"], [str(tmp_path / "g.npz")]):
        r = subprocess.run([sys.executable, "-m", "psc6k", "doctor", *args, "--annotations", csv],
                           capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
