"""Baselines: valid submissions, correct geometry, and better than identity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from psc6k import baselines as B
from psc6k.formats import Annotations, write_test_pairs_ps
from psc6k.pck import evaluate, transfer_keypoints
from psc6k.sketchy import photo_relpath, sketch_relpath
from psc6k.submission import load_submission

CATS = ("airplane", "apple", "bear")


def _photo_and_sketch(rng, scale, shift):
    """A photo with an ellipse object (+ inner rectangle) on a noisy background and a sketch of
    the same object mapped by ``x_s = (x_p - c) / scale + c + shift`` (c = image centre).
    Returns photo, sketch, sketch->photo 2x3 affine, photo keypoints [8, 2]."""
    c = 127.5
    s_to_p = np.array([[scale[0], 0, c - scale[0] * (c + shift[0])],
                       [0, scale[1], c - scale[1] * (c + shift[1])]])
    p_to_s = cv2.invertAffineTransform(s_to_p)
    photo = cv2.GaussianBlur(rng.integers(60, 200, (256, 256, 3)).astype(np.uint8), (0, 0), 2)
    center = (int(rng.integers(110, 146)), int(rng.integers(110, 146)))
    axes = (int(rng.integers(50, 70)), int(rng.integers(35, 50)))
    cv2.ellipse(photo, center, axes, 0, 0, 360, (40, 70, 210), -1)
    rect = np.array([[center[0] - 15, center[1] - 12], [center[0] + 20, center[1] + 14]])
    cv2.rectangle(photo, tuple(rect[0]), tuple(rect[1]), (220, 210, 50), -1)
    # the sketch: outline of the ellipse and the rectangle, drawn in sketch coordinates
    t = np.linspace(0, 2 * np.pi, 200)
    ell = np.stack([center[0] + axes[0] * np.cos(t), center[1] + axes[1] * np.sin(t)], 1)
    ell_s = ell @ p_to_s[:, :2].T + p_to_s[:, 2]
    rect_s = rect @ p_to_s[:, :2].T + p_to_s[:, 2]
    sketch = np.full((256, 256, 3), 255, np.uint8)
    cv2.polylines(sketch, [ell_s.round().astype(np.int32)], True, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.rectangle(sketch, tuple(rect_s[0].round().astype(int)), tuple(rect_s[1].round().astype(int)),
                  (0, 0, 0), 2, cv2.LINE_AA)
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    kps = [[center[0] + 0.7 * axes[0] * np.cos(a), center[1] + 0.7 * axes[1] * np.sin(a)] for a in ang]
    kps += [rect[0] + 3, rect[1] - 3]
    return photo, sketch, s_to_p, np.array(kps, dtype=np.float64)


def make_mini_benchmark(root, n_pairs: int = 6, seed: int = 0) -> Annotations:
    """A tiny Sketchy-shaped tree under ``root`` with exact ground truth; writes test_pairs_ps.csv."""
    rng = np.random.default_rng(seed)
    photos, sketches, pk, sk = [], [], [], []
    for i in range(n_pairs):
        cat = CATS[i % len(CATS)]
        pid = f"n0000{i % len(CATS)}_{100 + i}"
        photo_rel, sketch_rel = photo_relpath(cat, pid), sketch_relpath(cat, f"{pid}-1")
        scale = rng.uniform(0.75, 1.3, 2)
        shift = rng.uniform(18, 30, 2) * rng.choice([-1, 1], 2)
        photo, sketch, s_to_p, photo_kps = _photo_and_sketch(rng, scale, shift)
        p_to_s = cv2.invertAffineTransform(s_to_p)
        for rel, img in ((photo_rel, photo), (sketch_rel, sketch)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), img)
        photos.append(photo_rel), sketches.append(sketch_rel)
        pk.append(photo_kps)
        sk.append(np.clip(photo_kps @ p_to_s[:, :2].T + p_to_s[:, 2], 0, 255))
    ann = Annotations.from_arrays(photos, sketches, np.array(pk), np.array(sk))
    write_test_pairs_ps(ann, root / "test_pairs_ps.csv")
    return ann


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return root, make_mini_benchmark(root)


@pytest.fixture(scope="module")
def mini_subs(mini):
    root, ann = mini
    return B.run_baselines(B.BASELINES, ann, root, progress=False)


def test_identity_and_affine_flow_geometry():
    # identity: grid point k lands on pixel k * 255 / (S - 1)
    flow = B.baseline_pairs(["identity"], None, None)["identity"].sketch_to_photo
    assert flow.shape == (16, 16, 2) and flow.dtype == np.float32
    pts = np.array([[[0.0, 0.0], [255.0, 255.0], [17.0, 200.0]]])
    np.testing.assert_allclose(transfer_keypoints(flow[None], pts), [[[0, 0], [255, 255], [17, 200]]], atol=1e-4)
    # affine: exact at every (rounded) pixel, because bilinear upsampling reproduces affine maps
    m = np.array([[1.2, 0.0, -10.0], [0.0, 0.8, 30.0]])
    pts = np.array([[[10.0, 20.0], [100.0, 7.0], [250.0, 250.0]]])
    expected = pts[0] @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(transfer_keypoints(B.affine_flow(m)[None], pts)[0], expected, atol=1e-3)


def test_affine_from_masks_hand_worked():
    src = np.zeros((256, 256), bool)
    src[100:120, 50:90] = True            # centroid (69.5, 109.5)
    dst = np.zeros((256, 256), bool)
    dst[40:80, 150:170] = True            # centroid (159.5, 59.5); x spread halves, y doubles
    m = B.affine_from_masks(src, dst)
    np.testing.assert_allclose(m[:, :2], [[0.5, 0], [0, 2.0]], atol=0.02)
    np.testing.assert_allclose(m @ [69.5, 109.5, 1.0], [159.5, 59.5], atol=1e-6)
    np.testing.assert_allclose(B.invert_affine(m) @ [159.5, 59.5, 1.0], [69.5, 109.5], atol=1e-6)


def test_structure_map_decays_from_edges():
    edges = np.zeros((32, 32), bool)
    edges[:, 10] = True
    s = B.structure_map(edges, scale_px=4.0)
    assert s[5, 10] == 255
    assert s[5, 14] == pytest.approx(255 * np.exp(-1), abs=2)
    assert s[5, 10] > s[5, 12] > s[5, 20]
    assert not B.structure_map(np.zeros((8, 8), bool)).any()


def test_each_baseline_is_a_valid_submission(mini, mini_subs, tmp_path):
    root, ann = mini
    for name, sub in mini_subs.items():
        assert sub.kind == "flow" and sub.method == f"baseline-{name}"
        assert sub.photo == ann.photo and sub.sketch == ann.sketch
        assert sub.sketch_to_photo.shape[0] == len(ann) and sub.sketch_to_photo.shape[-1] == 2
        assert np.isfinite(sub.sketch_to_photo).all() and np.isfinite(sub.photo_to_sketch).all()
        for ext in (".npz", ".json"):
            from psc6k.submission import save_submission
            path = save_submission(sub, tmp_path / f"{name}{ext}")
            back = load_submission(path)  # the foundation's validator
            np.testing.assert_allclose(back.sketch_to_photo, sub.sketch_to_photo, atol=1e-6)


def test_affine_and_dense_beat_identity_on_mini(mini, mini_subs):
    root, ann = mini
    scores = {n: evaluate(ann, s, n_bootstrap=0) for n, s in mini_subs.items()}
    err = {n: r.mean_error_px["overall"] for n, r in scores.items()}
    assert err["identity"] > 20
    assert err["affine"] < 0.5 * err["identity"], err
    assert err["dense"] < 0.5 * err["identity"], err
    for key in ("pck@0.05", "pck@0.10"):
        assert scores["affine"].overall[key] > scores["identity"].overall[key]
        assert scores["dense"].overall[key] > scores["identity"].overall[key]


def test_flows_are_mutually_consistent(mini, mini_subs):
    """photo_to_sketch o sketch_to_photo ~ identity on the object (both directions are real)."""
    root, ann = mini
    for name in ("affine", "dense"):
        sub = mini_subs[name]
        there = transfer_keypoints(sub.sketch_to_photo, ann.sketch_kps)
        back = transfer_keypoints(sub.photo_to_sketch, np.clip(there, 0, 255))
        assert np.median(np.linalg.norm(back - ann.sketch_kps, axis=-1)) < 8, name


def test_empty_sketch_and_unknown_name():
    photo = np.full((256, 256, 3), 128, np.uint8)
    blank = np.full((256, 256, 3), 255, np.uint8)
    flows = B.baseline_pairs(["affine", "dense"], photo, blank)   # answers, no crash
    for pf in flows.values():
        assert np.isfinite(pf.sketch_to_photo).all() and np.isfinite(pf.photo_to_sketch).all()
    from psc6k.errors import Psc6kError
    with pytest.raises(Psc6kError, match="unknown baseline 'sift'"):
        B.baseline_pairs(["sift"], photo, blank)


def test_missing_image_names_the_file(mini, tmp_path):
    root, ann = mini
    from psc6k.errors import Psc6kError
    with pytest.raises(Psc6kError, match="image not found"):
        B.run_baselines(["affine"], ann, tmp_path, progress=False)


def test_cli_baseline(mini, tmp_path, capsys):
    from psc6k.cli import main
    root, ann = mini
    out = tmp_path / "aff.npz"
    assert main(["baseline", "affine", "--annotations", str(root / "test_pairs_ps.csv"), "--out", str(out),
                 "--eval", "--no-progress"]) == 0
    assert "PCK@0.10" in capsys.readouterr().out
    assert len(load_submission(out)) == len(ann)
    assert main(["baseline", "affine", "--annotations", str(root / "test_pairs_ps.csv"), "--images",
                 str(tmp_path), "--out", str(out)]) == 2
    assert "not a Sketchy root" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sample_scores():
    from psc6k.data import sample_path
    from psc6k.formats import read_annotations

    root = sample_path()
    ann = read_annotations(root / "test_pairs_ps.csv")
    subs = B.run_baselines(B.BASELINES, ann, root, progress=False)
    return ann, subs, {n: evaluate(ann, s, n_bootstrap=0) for n, s in subs.items()}


def test_affine_and_dense_beat_identity_on_the_bundled_sample(sample_scores):
    ann, subs, scores = sample_scores
    for name, sub in subs.items():
        assert len(sub) == len(ann) == 40
    for key in ("pck@0.05", "pck@0.10"):
        ident = scores["identity"].overall[key]
        assert scores["affine"].overall[key] > ident + 5, (key, scores["affine"].overall)
        assert scores["dense"].overall[key] > ident + 10, (key, scores["dense"].overall)
    assert scores["dense"].mean_error_px["overall"] < scores["identity"].mean_error_px["overall"]
    assert scores["affine"].mean_error_px["overall"] < scores["identity"].mean_error_px["overall"]


def test_affine_does_not_depend_on_what_ran_before():
    """GrabCut draws from OpenCV's global RNG; the baseline seeds it per call, so a pair's flow is
    the same whatever ran earlier in the process and in whatever order the pairs come (the docs'
    numbers come from a fresh process, the test suite's from a used one)."""
    from psc6k.data import sample_path
    from psc6k.formats import read_annotations

    root = sample_path()
    ann = read_annotations(root / "test_pairs_ps.csv").subset(np.arange(0, 40, 8))
    first = B.run_baselines(["affine"], ann, root, progress=False)["affine"].sketch_to_photo
    cv2.setRNGSeed(987654)
    cv2.randu(np.zeros((64, 64)), 0, 1)  # move the global RNG on
    again = B.run_baselines(["affine"], ann.subset(np.arange(len(ann))[::-1]), root, progress=False)["affine"]
    np.testing.assert_array_equal(np.asarray(again.sketch_to_photo)[::-1], first)
