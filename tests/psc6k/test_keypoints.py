"""Keypoint sampling (SPEC §4 A.1): masks, pseudo-parts, keypoints, and ``psc6k build-keypoints``.

Shapes are drawn by hand with OpenCV so that the expected mask is known exactly; the quality
reference is the naive scikit-learn reading of the paper (``reference_pseudo_parts``) on a small
mask, so it stays fast.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy import ndimage

from psc6k import keypoints as K
from psc6k.keypoints.parts import _ensure_k_parts as ensure_k_parts
from psc6k.cli import main
from psc6k.formats import read_keypoints_csv, write_pair_list, TrainPairs
from psc6k.sketchy import SKETCH_DIR, sketch_relpath, photo_relpath

EIGHT = np.ones((3, 3), bool)


# ----------------------------------------------------------------------------- drawing helpers
def blank(h=256, w=256):
    return np.full((h, w), 255, np.uint8)


def circle_sketch(r=60, thickness=2, center=(128, 128), aa=True):
    img = blank()
    cv2.circle(img, center, r, 0, thickness, cv2.LINE_AA if aa else cv2.LINE_8)
    return img


def gappy_circle(r=70, gap_deg=8, n_gaps=3):
    """A circle drawn as arcs with ``n_gaps`` gaps of ``gap_deg`` degrees each."""
    img = blank()
    step = 360 // n_gaps
    for i in range(n_gaps):
        cv2.ellipse(img, (128, 128), (r, r), 0, i * step, (i + 1) * step - gap_deg, 0, 2, cv2.LINE_AA)
    return img


def n_components(mask):
    return ndimage.label(mask, structure=EIGHT)[1]


def on_mask(mask, kps):
    r = np.rint(kps[:, 1]).astype(int)
    c = np.rint(kps[:, 0]).astype(int)
    return mask[r, c]


# ----------------------------------------------------------------------------- binarisation
def test_binarize_antialiased_grey_and_colour_modes_agree():
    img = circle_sketch()
    ink = K.binarize(img)
    # anti-aliased 2 px circle: the ink is a thin ring around radius 60
    rows, cols = np.nonzero(ink)
    radius = np.hypot(rows - 128, cols - 128)
    assert radius.min() > 57 and radius.max() < 63
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    assert np.array_equal(K.binarize(rgb), ink)
    assert np.array_equal(K.binarize(img.astype(np.float64) / 255), ink)
    # RGBA with a transparent background and opaque black strokes
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., 3] = 255 - img  # alpha = darkness; colour black everywhere
    assert np.array_equal(K.binarize(rgba), ink)


def test_binarize_faint_pencil_sketch():
    img = blank()
    cv2.circle(img, (128, 128), 50, 170, 2)  # light grey strokes
    ink = K.binarize(img)
    assert ink.sum() > 0.9 * (img < 255).sum()


@pytest.mark.parametrize("value,reason", [(255, "empty"), (250, "empty"), (0, "all_black"), (20, "all_black")])
def test_uniform_images_are_rejected(value, reason):
    with pytest.raises(K.SketchError) as exc:
        K.sample_keypoints(np.full((64, 64), value, np.uint8))
    assert exc.value.reason == reason


def test_mostly_dark_image_is_rejected_as_inverted():
    img = np.zeros((128, 128), np.uint8)
    cv2.circle(img, (64, 64), 30, 255, 2)  # white strokes on black paper
    with pytest.raises(K.SketchError) as exc:
        K.sketch_mask(img)
    assert exc.value.reason == "all_black"


# ----------------------------------------------------------------------------- masks
def test_closed_outline_fills_to_the_disc():
    mask, it = K.sketch_mask(circle_sketch(r=60), return_iterations=True)
    assert it == 0
    yy, xx = np.mgrid[:256, :256]
    disc = np.hypot(yy - 128, xx - 128) <= 60
    # the filled outline is the disc up to the stroke's half width
    assert (mask & ~disc).sum() < 2 * np.pi * 60 * 2
    assert (disc & ~mask).sum() == 0
    assert n_components(mask) == 1


def test_outline_with_gaps_needs_dilations_and_is_filled():
    img = gappy_circle(gap_deg=4, n_gaps=3)  # gaps of ~5 px
    mask, it = K.sketch_mask(img, return_iterations=True)
    assert 1 <= it <= 4
    assert n_components(mask) == 1
    # a 2 px-stroke ring would be ~900 px: the interior got filled
    assert mask.sum() > np.pi * 65 ** 2
    # each dilation counted once: one fewer than needed is not enough
    with pytest.raises(K.SketchError) as exc:
        K.sketch_mask(img, max_dilations=it - 1) if it > 1 else K.sketch_mask(gappy_circle(gap_deg=12), max_dilations=1)
    assert exc.value.reason == "not_connected"


def test_two_disconnected_strokes_get_connected_or_rejected():
    img = blank()
    cv2.line(img, (60, 60), (60, 200), 0, 2)
    cv2.line(img, (70, 60), (70, 200), 0, 2)  # 8 px apart: a few dilations join them
    mask, it = K.sketch_mask(img, return_iterations=True)
    assert it >= 1 and n_components(mask) == 1
    far = blank()
    cv2.line(far, (20, 20), (20, 100), 0, 2)
    cv2.line(far, (230, 150), (230, 240), 0, 2)  # 200 px apart
    with pytest.raises(K.SketchError) as exc:
        K.sketch_mask(far)
    assert exc.value.reason == "not_connected"
    assert "dilations" in str(exc.value)


def test_thin_one_pixel_8_connected_strokes_need_no_dilation():
    img = blank()
    pts = np.array([[40, 40], [200, 60], [180, 220], [50, 190]], np.int32)
    cv2.polylines(img, [pts], True, 0, 1, cv2.LINE_8)  # 1 px, diagonal steps are 8-connected
    mask, it = K.sketch_mask(img, return_iterations=True)
    assert it == 0
    assert mask[128, 128]  # interior filled
    assert n_components(mask) == 1


def test_noise_specks_are_ignored():
    img = circle_sketch(r=50)
    clean = K.sketch_mask(img)
    for y, x in [(5, 5), (250, 10), (10, 240), (240, 240)]:
        img[y, x] = 0  # single-pixel dust far from the drawing
    mask, it = K.sketch_mask(img, return_iterations=True)
    assert it == 0
    assert np.array_equal(mask, clean)


def test_fill_holes_matches_scipy_on_random_images():
    """The flood-fill ``fill_holes`` against SciPy's ``binary_fill_holes`` (4-connected background)."""
    from psc6k.keypoints._morphology import fill_holes

    rng = np.random.default_rng(1)
    for _ in range(300):
        img = rng.random((rng.integers(1, 30), rng.integers(1, 30))) < rng.uniform(0.1, 0.8)
        assert np.array_equal(fill_holes(img), ndimage.binary_fill_holes(img))
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6], ring[2:5, 2:5] = True, False
    assert fill_holes(ring).sum() == 25 and not fill_holes(ring)[0].any()
    ring[3, 1] = False  # a 4-connected leak: not enclosed
    assert fill_holes(ring).sum() == ring.sum()


def test_close_gaps_fills_an_almost_closed_outline():
    img = blank()
    cv2.ellipse(img, (128, 128), (70, 70), 0, 4, 356, 0, 2, cv2.LINE_AA)  # one arc, ~10 px gap
    paper, it = K.sketch_mask(img, return_iterations=True)
    assert it == 0 and not paper[128, 128]  # the paper's rule: the arc is one piece, no fill
    closed = K.sketch_mask(img, close_gaps_px=6)
    assert closed[128, 128] and (closed | ~paper).all()  # filled, and contains the paper mask
    assert closed.sum() > np.pi * 68 ** 2 and n_components(closed) == 1
    yy, xx = np.mgrid[:256, :256]
    assert not closed[np.hypot(yy - 128, xx - 128) > 76].any()  # no growth beyond the stroke
    assert np.array_equal(K.sketch_mask(img, close_gaps_px=0), paper)


def test_bool_input_is_ink():
    ink = np.zeros((100, 100), bool)
    ink[20:80, 20] = ink[20:80, 79] = ink[20, 20:80] = ink[79, 20:80] = True
    mask = K.sketch_mask(ink)
    assert mask[20:80, 20:80].all() and mask.sum() == 60 * 60


# ----------------------------------------------------------------------------- pseudo-parts
def shapes():
    yy, xx = np.mgrid[:256, :256]
    disc = np.hypot(yy - 128, xx - 128) <= 80
    ring = disc & (np.hypot(yy - 128, xx - 128) >= 55)
    ell = np.zeros((256, 256), bool)
    ell[30:230, 30:80] = True
    ell[180:230, 30:230] = True
    dumbbell = (np.hypot(yy - 128, xx - 60) <= 45) | (np.hypot(yy - 128, xx - 196) <= 45)
    dumbbell[124:133, 60:196] = True  # a thin 9 px bar
    thin = np.zeros((256, 256), bool)
    cv2.polylines(thin.view(np.uint8), [np.array([[20, 20], [230, 40], [200, 230], [40, 200]], np.int32)],
                  False, 1, 1)
    return {"disc": disc, "ring": ring, "L": ell, "dumbbell": dumbbell, "thin": thin.astype(bool)}


@pytest.mark.parametrize("name", ["disc", "ring", "L", "dumbbell", "thin"])
def test_parts_cover_the_mask_and_are_connected(name):
    mask = shapes()[name]
    parts = K.pseudo_parts(mask, k=8, seed=0)
    assert parts.shape == mask.shape
    assert np.array_equal(parts >= 0, mask)
    assert parts.min() == -1 and set(np.unique(parts[mask])) == set(range(8))
    for lab in range(8):
        assert n_components(parts == lab) == 1, f"part {lab} of {name} is split"
    assert K.parts_connected(parts, 8)
    kps = K.part_keypoints(parts, 8)
    assert kps.shape == (8, 2) and kps.dtype == np.float64
    r, c = np.rint(kps[:, 1]).astype(int), np.rint(kps[:, 0]).astype(int)
    assert np.array_equal(parts[r, c], np.arange(8)), "each keypoint lies on its own part"


def test_parts_are_balanced_on_a_disc():
    parts = K.pseudo_parts(shapes()["disc"], k=8, seed=0)
    sizes = np.bincount(parts[parts >= 0])
    assert sizes.min() > 0.4 * sizes.mean() and sizes.max() < 2.0 * sizes.mean()


def test_parts_follow_the_mask_not_the_air():
    # two lobes joined by a thin bar: no part may straddle both lobes without the bar
    mask = shapes()["dumbbell"]
    parts = K.pseudo_parts(mask, k=2, seed=0)
    left = np.bincount(parts[:, :100][mask[:, :100]], minlength=2)
    right = np.bincount(parts[:, 156:][mask[:, 156:]], minlength=2)
    assert left.argmax() != right.argmax()
    assert left.max() > 0.95 * left.sum() and right.max() > 0.95 * right.sum()


def test_deterministic_for_a_seed():
    img = gappy_circle()
    a = K.analyze_sketch(img, seed=3)
    b = K.analyze_sketch(img.copy(), seed=3)
    assert np.array_equal(a.parts, b.parts)
    assert np.array_equal(a.keypoints, b.keypoints)
    assert np.array_equal(K.sample_keypoints(img, seed=3), a.keypoints)


def test_reading_order_of_parts():
    parts = K.pseudo_parts(shapes()["L"], k=8, seed=1)
    kps = K.part_keypoints(parts, 8)
    band = np.floor(kps[:, 1] / 32)
    # bands never decrease, and inside a band x increases
    assert np.all(np.diff(band) >= 0)
    for b in np.unique(band):
        xs = kps[band == b, 0]
        assert np.all(np.diff(xs) > 0)


def test_disconnected_mask_is_rejected():
    mask = np.zeros((100, 100), bool)
    mask[10:40, 10:40] = mask[60:90, 60:90] = True
    with pytest.raises(K.SketchError) as exc:
        K.pseudo_parts(mask)
    assert exc.value.reason == "not_connected"


def test_lost_part_is_reseeded():
    parts = np.full((40, 40), -1)
    parts[5:35, 5:35] = 0
    parts[5:35, 20:35] = 1  # label 2 missing
    fixed = ensure_k_parts(parts.copy(), 3)
    assert set(np.unique(fixed[fixed >= 0])) == {0, 1, 2}
    assert np.array_equal(fixed >= 0, parts >= 0)


def test_too_small_mask():
    mask = np.zeros((50, 50), bool)
    mask[10:13, 10:13] = True
    with pytest.raises(K.SketchError) as exc:
        K.pseudo_parts(mask, k=8)
    assert exc.value.reason == "too_small"


def test_every_pixel_mode_matches_subsampled_mode_in_quality():
    mask = shapes()["L"][::2, ::2]
    fast = K.part_keypoints(K.pseudo_parts(mask, seed=0), 8)
    full = K.part_keypoints(K.pseudo_parts(mask, seed=0, n_samples=10 ** 9), 8)
    assert K.coverage_cost(mask, fast) <= 1.05 * K.coverage_cost(mask, full)


# ----------------------------------------------------------------------------- keypoints
def test_centroid_kept_when_inside_and_moved_when_outside():
    parts = np.full((60, 60), -1)
    parts[10:20, 10:30] = 0  # a rectangle: centroid (19.5, 14.5) is inside
    yy, xx = np.mgrid[:60, :60]
    ring = (np.hypot(yy - 40, xx - 40) <= 12) & (np.hypot(yy - 40, xx - 40) >= 8)
    parts[ring] = 1  # a ring: centroid (40, 40) is in the hole
    kps, moved = K.part_keypoints(parts, 2, return_moved=True)
    assert np.allclose(kps[0], [19.5, 14.5]) and not moved[0]
    assert moved[1]
    assert parts[int(kps[1, 1]), int(kps[1, 0])] == 1
    assert np.isclose(np.hypot(kps[1, 0] - 40, kps[1, 1] - 40), 8, atol=0.5)  # nearest ring pixel


def test_coverage_cost_hand_computed():
    mask = np.zeros((3, 4), bool)
    mask[1, :] = True  # pixels (x=0..3, y=1)
    cost = K.coverage_cost(mask, np.array([[0.0, 1.0], [3.0, 1.0]]))
    assert np.isclose(cost, (0 + 1 + 1 + 0) / 4)


def test_fast_matches_naive_reference_quality():
    # a small sketch so the naive clustering (every pixel) stays fast
    img = blank(64, 64)
    pts = np.array([[12, 8], [50, 12], [56, 34], [40, 56], [8, 48]], np.int32)
    cv2.polylines(img, [pts], True, 0, 1, cv2.LINE_AA)
    res = K.analyze_sketch(img, seed=0)
    ref = K.reference_pseudo_parts(res.mask, 8, seed=0)
    assert np.array_equal(ref >= 0, res.mask)
    rows, cols = np.nonzero(ref >= 0)
    lab = ref[rows, cols]
    cnt = np.bincount(lab, minlength=8)
    ref_kps = np.column_stack([np.bincount(lab, cols, 8) / cnt, np.bincount(lab, rows, 8) / cnt])
    assert K.coverage_cost(res.mask, res.keypoints) <= 1.05 * K.coverage_cost(res.mask, ref_kps)
    assert on_mask(res.mask, res.keypoints).all()


def test_keypoints_are_in_the_input_images_pixels():
    img = blank(200, 400)  # not square, not 256
    cv2.ellipse(img, (300, 100), (80, 60), 0, 0, 360, 0, 2, cv2.LINE_AA)
    res = K.analyze_sketch(np.dstack([img, img, img]), seed=0)
    kps = res.keypoints
    assert kps.shape == (8, 2)
    assert (kps[:, 0] > 215).all() and (kps[:, 0] < 385).all()
    assert (kps[:, 1] > 35).all() and (kps[:, 1] < 165).all()
    assert on_mask(res.mask, kps).all()


def test_result_diagnostics():
    res = K.analyze_sketch(gappy_circle(), seed=0)
    assert res.dilation_iterations >= 1
    assert res.n_nodes >= 32 and res.stride >= 1
    assert res.parts.dtype.kind == "i" and res.mask.dtype == bool
    assert res.moved.shape == (8,)


# ----------------------------------------------------------------------------- files
def test_load_sketch_modes_and_bad_files(tmp_path):
    img = circle_sketch()
    cv2.imwrite(str(tmp_path / "l.png"), img)
    cv2.imwrite(str(tmp_path / "rgb.jpg"), np.dstack([img] * 3), [cv2.IMWRITE_JPEG_QUALITY, 95])
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., 3] = 255 - img
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    ref = K.sample_keypoints(img, seed=0)
    assert np.array_equal(K.sample_keypoints(tmp_path / "l.png", seed=0), ref)
    assert np.array_equal(K.sample_keypoints(str(tmp_path / "rgba.png"), seed=0), ref)
    assert np.abs(K.sample_keypoints(tmp_path / "rgb.jpg", seed=0) - ref).max() < 5

    data = (tmp_path / "l.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("trunc.png", "text.png", "missing.png"):
        with pytest.raises(K.SketchError) as exc:
            K.load_sketch(tmp_path / name)
        assert exc.value.reason == "unreadable" and name in str(exc.value)


# ----------------------------------------------------------------------------- the command
def write_sketches(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = blank()
        cv2.ellipse(img, (128, 128), (40 + 15 * i, 70), 10 * i, 0, 360, 0, 2, cv2.LINE_AA)
        p = folder / f"s{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def test_cli_directory_input_and_error_paths(tmp_path, capsys):
    src = tmp_path / "sk"
    write_sketches(src / "b")
    write_sketches(src / "a", 1)
    cv2.imwrite(str(src / "a" / "white.png"), blank())
    cv2.imwrite(str(src / "a" / "black.png"), np.zeros((256, 256), np.uint8))
    good = (src / "b" / "s0.png").read_bytes()
    (src / "b" / "trunc.png").write_bytes(good[: len(good) // 2])
    apart = blank()
    cv2.line(apart, (10, 10), (10, 60), 0, 2)
    cv2.line(apart, (240, 200), (240, 250), 0, 2)
    cv2.imwrite(str(src / "b" / "apart.png"), apart)
    (src / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "k.csv"
    status = main(["build-keypoints", str(src), "--out", str(out), "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    for name, word in [("a/white.png", "empty"), ("a/black.png", "black"), ("b/trunc.png", "truncated"),
                       ("b/apart.png", "dilations")]:
        line = [ln for ln in err.splitlines() if name in ln]
        assert line and word in line[0], (name, err)
    kps = read_keypoints_csv(out)
    assert list(kps) == ["a/s0.png", "b/s0.png", "b/s1.png", "b/s2.png"]  # sorted, failures left out
    assert all(v.shape == (8, 2) for v in kps.values())
    # the same keypoints as the Python API (rounded to 1/1000 px)
    assert np.allclose(kps["b/s1.png"], K.sample_keypoints(src / "b" / "s1.png", seed=0), atol=6e-4)
    assert main(["build-keypoints", str(src), "--out", str(out), "--keep-going", "--json",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_sketches"] == 8 and summary["n_ok"] == 4 and summary["n_failed"] == 4
    assert summary["failures_by_reason"] == {"all_black": 1, "empty": 1, "not_connected": 1, "unreadable": 1}


def test_cli_workers_viz_seed_and_sketchy_keys(tmp_path, capsys):
    root = tmp_path / "Sketchy"
    write_sketches(root / SKETCH_DIR / "cat", 3)
    out1, out2 = tmp_path / "one.csv", tmp_path / "two.csv"
    viz = tmp_path / "viz"
    assert main(["build-keypoints", str(root / SKETCH_DIR), "--out", str(out1), "--no-progress",
                 "--viz", str(viz), "--seed", "5"]) == 0
    assert main(["build-keypoints", str(root / SKETCH_DIR / "cat"), "--out", str(out2), "--no-progress",
                 "--workers", "2", "--seed", "5"]) == 0
    assert out1.read_bytes() == out2.read_bytes(), "workers do not change the result"
    keys = list(read_keypoints_csv(out1))
    assert keys == [f"{SKETCH_DIR}/cat/s{i}.png" for i in range(3)]  # relative to the Sketchy root
    strip = cv2.imread(str(viz / SKETCH_DIR / "cat" / "s0.png"))
    assert strip is not None and strip.shape == (256, 4 * 256 + 12, 3)


def test_cli_csv_input(tmp_path, capsys):
    root = tmp_path / "Sketchy"
    write_sketches(root / SKETCH_DIR / "cat", 2)
    sketches = [sketch_relpath("cat", "s1"), sketch_relpath("cat", "s0"), sketch_relpath("cat", "s1")]
    photos = [photo_relpath("cat", "p1"), photo_relpath("cat", "p0"), photo_relpath("cat", "p1x")]
    pairs = TrainPairs.from_paths(photos, sketches)
    write_pair_list(pairs, root / "test_pairs.csv")
    out = tmp_path / "k.csv"
    # paths relative to the CSV's folder (here the Sketchy root)
    assert main(["build-keypoints", str(root / "test_pairs.csv"), "--out", str(out), "--no-progress"]) == 0
    assert list(read_keypoints_csv(out)) == [sketches[0], sketches[1]]  # first-appearance order, distinct
    # or relative to --images
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    write_pair_list(pairs, elsewhere / "pairs.csv")
    assert main(["build-keypoints", str(elsewhere / "pairs.csv"), "--images", str(root), "--out", str(out),
                 "--no-progress"]) == 0
    assert len(read_keypoints_csv(out)) == 2
    capsys.readouterr()
    # without --images the paths do not resolve: one clear error, not one per sketch
    assert main(["build-keypoints", str(elsewhere / "pairs.csv"), "--out", str(out), "--no-progress"]) == 2
    assert "pass --images" in capsys.readouterr().err
    # ... unless build-pairs recorded the Sketchy root beside the CSV
    (elsewhere / "summary.json").write_text(json.dumps({"sketchy_root": str(root)}))
    assert main(["build-keypoints", str(elsewhere / "pairs.csv"), "--out", str(out), "--no-progress"]) == 0
    # a listed sketch that is missing is a per-sketch error naming it
    (root / sketches[1]).unlink()
    assert main(["build-keypoints", str(root / "test_pairs.csv"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert sketches[1] in err and "image not found" in err


def test_cli_user_errors(tmp_path, capsys):
    assert main(["build-keypoints", str(tmp_path / "missing"), "--out", str(tmp_path / "k.csv")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["build-keypoints", str(tmp_path / "empty"), "--out", str(tmp_path / "k.csv")]) == 2
    assert "no image files" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["build-keypoints", str(bad), "--out", str(tmp_path / "k.csv")]) == 2
    assert "expected a pair CSV" in capsys.readouterr().err


def test_thread_settings_are_restored():
    import sklearn.cluster  # noqa: F401  (loads the OpenMP runtime k-means uses, so it is listed before)
    from threadpoolctl import threadpool_info

    from psc6k.keypoints._morphology import single_threaded

    def state():
        return cv2.getNumThreads(), [(i["filepath"], i["num_threads"]) for i in threadpool_info()]

    before = state()
    K.sample_keypoints(circle_sketch(), seed=0)
    assert state() == before
    with single_threaded():
        with single_threaded():  # nested: nothing to set, still one thread
            assert cv2.getNumThreads() == 1 and all(n == 1 for _, n in state()[1])
        assert cv2.getNumThreads() == 1 and all(n == 1 for _, n in state()[1])
    assert state() == before


@pytest.mark.parametrize("seed", range(12))
def test_invariants_on_random_scribbles(seed):
    """Random strokes (open and closed, 1-3 px, some far apart): either a clear not_connected
    error, or a connected mask split into 8 connected parts with every keypoint on its part."""
    rng = np.random.default_rng(seed)
    img = blank()
    for _ in range(rng.integers(1, 6)):
        pts = rng.integers(20, 236, size=(rng.integers(2, 7), 2)).astype(np.int32)
        cv2.polylines(img, [pts], bool(rng.integers(0, 2)), 0, int(rng.integers(1, 4)), cv2.LINE_AA)
    try:
        res = K.analyze_sketch(img, seed=seed)
    except K.SketchError as exc:
        assert exc.reason == "not_connected"
        return
    assert n_components(res.mask) == 1
    assert (res.mask | ~res.ink).all(), "every stroke pixel is in the mask"
    assert np.array_equal(res.parts >= 0, res.mask)
    assert K.parts_connected(res.parts, 8)
    r, c = np.rint(res.keypoints[:, 1]).astype(int), np.rint(res.keypoints[:, 0]).astype(int)
    assert np.array_equal(res.parts[r, c], np.arange(8))


# ----------------------------------------------------------------------------- stray marks
def specked(img, specks):
    """``img`` with filled dots ``(x, y, radius)``."""
    img = img.copy()
    for x, y, r in specks:
        cv2.circle(img, (x, y), r, 0, -1)
    return img


def test_specks_far_from_the_object_are_set_aside_near_ones_joined():
    base = circle_sketch(r=50)
    ref = K.object_mask(K.binarize(base))
    assert ref.dilations == 0 and ref.n_set_aside == 0
    # far: 3 dots 40+ px outside the circle -> set aside, mask unchanged, counted
    far = K.object_mask(K.binarize(specked(base, [(20, 20, 2), (235, 30, 2), (230, 230, 1)])))
    assert far.n_stray == 3 and far.dilations == 0
    assert np.array_equal(far.mask, ref.mask)
    assert far.set_aside.sum() > 0 and not (far.set_aside & far.ink).any()
    # a mark rule mutation check: with stray marks off (the paper literally) they are joined
    literal = K.object_mask(K.binarize(specked(base, [(20, 20, 2)])), stray_gap=0, max_dilations=80)
    assert literal.n_stray == 0 and literal.dilations > 10
    # near: a dot 6 px outside the outline is the object's, joined by the paper's dilation
    near = K.object_mask(K.binarize(specked(base, [(128 + 50 + 7, 128, 2)])))
    assert near.n_stray == 0 and 1 <= near.dilations <= 4
    assert near.ink[128, 128 + 50 + 7]
    # inside the outline (an eye): on the object whatever its distance
    eye = K.object_mask(K.binarize(specked(base, [(128, 128, 2)])))
    assert eye.n_stray == 0 and eye.ink[128, 128]
    # ... also inside an outline with a gap (not filled by the paper's rule alone)
    gappy = K.object_mask(K.binarize(specked(gappy_circle(gap_deg=6, n_gaps=1), [(128, 128, 2)])))
    assert gappy.n_stray == 0 and gappy.ink[128, 128]
    # nothing silently dropped: ink = object ink + set aside
    ink = K.binarize(specked(base, [(20, 20, 2), (128, 128, 2)]))
    res = K.object_mask(ink)
    assert np.array_equal(res.ink | res.set_aside, ink)


def test_a_large_far_piece_is_not_a_stray_mark():
    """Above the ink-share threshold a separate piece is the object's, joined by dilation."""
    img = circle_sketch(r=40, center=(90, 128))
    cv2.circle(img, (200, 128), 18, 0, 2)  # a second, smaller circle 32 px away
    res = K.object_mask(K.binarize(img))
    assert res.n_stray == 0 and res.n_pieces == 2 and res.dilations >= 15
    assert K.n_components(res.mask) == 1 if hasattr(K, "n_components") else n_components(res.mask) == 1
    # mutation check: at a 40% threshold the small circle would be a stray mark
    assert K.object_mask(K.binarize(img), stray_fraction=0.4).n_stray == 1


def wide_sketch():
    img = blank()
    cv2.ellipse(img, (106, 128), (45, 80), 0, 90, 270, 0, 2)  # x 61..106
    cv2.ellipse(img, (148, 128), (45, 80), 0, -90, 90, 0, 2)  # x 148..193: 41 px apart
    return img


def test_outlines_needing_twenty_plus_dilations_pass():
    """Two halves of an object 40 px apart (like the bundled sample's bird, 22 dilations)."""
    img = wide_sketch()
    res = K.object_mask(K.binarize(img))
    assert res.dilations >= 20 and res.n_pieces == 2 and n_components(res.mask) == 1
    assert res.max_dilations >= res.dilations
    kps = K.sample_keypoints(img)
    assert on_mask(res.mask, kps).all()
    # a small stroke between the halves lies inside the joined object: the object's, not stray
    cv2.line(img, (122, 128), (132, 128), 0, 2)
    res2 = K.object_mask(K.binarize(img))
    assert res2.n_stray == 0 and res2.ink[128, 127] and res2.dilations == res.dilations


def test_several_large_pieces_that_cannot_join_are_an_error():
    img = blank(256, 512)
    for cx in (40, 256, 472):  # three 30 px objects 180+ px apart
        cv2.circle(img, (cx, 128), 15, 0, 2)
    with pytest.raises(K.SketchError, match="3 separate parts even after") as exc:
        K.object_mask(K.binarize(img))
    assert exc.value.reason == "not_connected"
    # a larger explicit bound joins them (the error is the bound, not a crash)
    assert n_components(K.object_mask(K.binarize(img), max_dilations=100).mask) == 1


@pytest.mark.parametrize("name", ["bird/syn0008_00001-1", "cup/syn0009_00001-1"])
def test_the_bundled_samples_wide_sketches_build(name):
    from psc6k.data import sample_path

    path = sample_path() / SKETCH_DIR / f"{name}.png"
    res = K.analyze_sketch(path)
    assert res.dilation_iterations in (18, 22) and K.parts_connected(res.parts, 8)
    assert on_mask(res.mask, res.keypoints).all()


# ----------------------------------------------------------------------------- report and resume
def test_report_rows_and_summary_line(tmp_path, capsys):
    src = tmp_path / "s"
    write_sketches(src, 2)
    cv2.imwrite(str(src / "specks.png"), specked(circle_sketch(r=50), [(20, 20, 2), (235, 30, 2)]))
    cv2.imwrite(str(src / "wide.png"), wide_sketch())
    cv2.imwrite(str(src / "zblank.png"), blank())
    out, report, viz = tmp_path / "k.csv", tmp_path / "report.csv", tmp_path / "viz"
    assert main(["build-keypoints", str(src), "--out", str(out), "--report", str(report), "--viz", str(viz),
                 "--no-progress", "--keep-going"]) == 0
    line = capsys.readouterr().out
    assert "4 of 5 sketches" in line and "1 with marks set aside" in line and "2 stray" in line
    import csv as _csv

    rows = {r["sketch"]: r for r in _csv.DictReader(open(report))}
    assert list(rows) == ["s0.png", "s1.png", "specks.png", "wide.png", "zblank.png"]
    assert rows["specks.png"]["stray_marks"] == "2" and int(rows["specks.png"]["ink_px_set_aside"]) > 0
    assert int(rows["wide.png"]["dilations"]) >= 20
    assert rows["wide.png"]["pieces_joined"] == "2"
    assert rows["s0.png"]["status"] == "ok" and rows["s0.png"]["parts_connected"] == "8"
    assert rows["zblank.png"]["status"] == "empty" and rows["zblank.png"]["error"]
    assert int(rows["s0.png"]["mask_px"]) > 1000
    strip = cv2.imread(str(viz / "specks.png"))[:, :256, ::-1]
    assert (np.all(strip == (230, 0, 0), axis=2)).sum() > 0, "set-aside ink drawn red"
    assert not (tmp_path / "k.csv.journal").exists()


def _kill_mid_run(cmd, journal, min_records, timeout=60):
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "psc6k.cli", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if journal.exists() and journal.read_bytes().count(b"\n") > min_records:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    import psc6k.keypoints.batch as batch

    src = tmp_path / "s"
    src.mkdir()
    for i in range(40):
        img = blank()
        cv2.ellipse(img, (128, 128), (30 + i % 7 * 8, 50 + i % 5 * 10), 7 * i, 0, 360, 0, 2, cv2.LINE_AA)
        cv2.imwrite(str(src / f"s{i:02d}.png"), img)
    ref, ref_report = tmp_path / "ref.csv", tmp_path / "ref_report.csv"
    assert main(["build-keypoints", str(src), "--out", str(ref), "--report", str(ref_report), "--no-progress"]) == 0
    out, report = tmp_path / "out.csv", tmp_path / "report.csv"
    journal = tmp_path / "out.csv.journal"
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    rc = _kill_mid_run(["build-keypoints", str(src), "--out", str(out), "--report", str(report), "--no-progress"],
                       journal, min_records=8)
    assert rc == -9 and journal.exists() and not out.exists(), "killed mid-run, no final CSV"
    done = journal.read_bytes().count(b"\n") - 1
    assert 0 < done < 40
    # a torn last line (kill mid-write) is tolerated
    with open(journal, "ab") as fh:
        fh.write(b'{"sketch":"s3')
    # without --resume: one clear error, nothing overwritten
    assert main(["build-keypoints", str(src), "--out", str(out), "--no-progress"]) == 2
    # other settings: refused
    assert main(["build-keypoints", str(src), "--out", str(out), "--seed", "3", "--resume", "--no-progress"]) == 2
    seen = []
    real = batch.process_one
    monkeypatch.setattr(batch, "process_one", lambda t: seen.append(t[0]) or real(t))
    assert main(["build-keypoints", str(src), "--out", str(out), "--report", str(report), "--resume",
                 "--no-progress"]) == 0
    assert len(seen) == 40 - done and len(set(seen)) == len(seen), "each sketch once"
    assert out.read_bytes() == ref.read_bytes()
    assert report.read_bytes() == ref_report.read_bytes()
    assert not journal.exists()


def _pool_workers(parent_pid: int) -> list[int]:
    """Pids of the spawned pool workers of ``parent_pid`` (not its resource tracker)."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent_pid and b"spawn_main" in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="finds the workers through /proc")
def test_a_killed_worker_is_one_line_and_resume_continues(tmp_path):
    """A pool worker SIGKILLed mid-run (as the OOM killer does): exit 2, one line naming the
    sketches in flight and --resume; the journal keeps what finished; --resume completes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "s"
    src.mkdir()
    for i in range(100):  # small drawings: the run must outlast the kill, the test must be quick
        img = blank(96, 96)
        cv2.ellipse(img, (48, 48), (12 + i % 7 * 3, 20 + i % 5 * 4), 7 * i, 0, 360, 0, 1, cv2.LINE_AA)
        cv2.imwrite(str(src / f"s{i:03d}.png"), img)
    ref = tmp_path / "ref.csv"
    assert main(["build-keypoints", str(src), "--out", str(ref), "--no-progress"]) == 0
    out, journal = tmp_path / "out.csv", tmp_path / "out.csv.journal"
    cmd = [sys.executable, "-m", "psc6k.cli", "build-keypoints", str(src), "--out", str(out),
           "--workers", "2", "--no-progress"]
    tmp = tmp_path / "tmp"  # where the run's in-flight board lands: the test watches the workers' progress
    tmp.mkdir()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp)})
    killed, t0 = None, time.monotonic()
    try:
        while killed is None and proc.poll() is None and time.monotonic() - t0 < 120:
            boards = list(tmp.glob("*.inflight"))
            finished = boards[0].read_bytes().count(2) if boards else 0
            workers = _pool_workers(proc.pid)
            if 10 <= finished < 60 and workers:  # mid-run: the pool cannot have finished
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.002)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed is not None, "the run ended before a worker could be killed"
    text = err.decode()
    lines = text.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in text, text
    line = lines[0]
    assert line.startswith("psc6k build-keypoints: error: a worker process died abruptly"), line
    assert "--resume" in line and str(journal) in line
    done = [json.loads(x)["sketch"] for x in journal.read_text().splitlines()[1:]]
    assert f"the {len(done)} of 100 sketches finished are kept" in line
    assert done == [f"s{i:03d}.png" for i in range(len(done))], "the journal holds what finished, in order"
    if "between sketches" not in line:  # (both workers between two chunks: rare)
        in_flight = line.split("while processing ")[1].split(";")[0].split(", ")
        assert 1 <= len(in_flight) <= 2 and all(s.startswith("s") and s.endswith(".png") for s in in_flight)
        assert not set(in_flight) & set(done), "the sketches named were not finished"
    assert not list(tmp.glob("*.inflight")), "the board is removed"
    assert main(["build-keypoints", str(src), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert out.read_bytes() == ref.read_bytes()
    assert not journal.exists()


def test_worker_died_names_the_sketches_in_flight(tmp_path):
    """The board a worker marks: started-and-unfinished tasks are the ones named."""
    from psc6k.keypoints.inflight import InFlightBoard, WorkerDied

    board = InFlightBoard(6)
    try:
        for i, state in ((0, board.STARTED), (0, board.FINISHED), (2, board.STARTED), (5, board.STARTED)):
            InFlightBoard.mark(*board.slot(i), state)
        assert board.started() == [2, 5]
    finally:
        board.close()
    assert not __import__("os").path.exists(board.path)
    msg = str(WorkerDied(["a/1.png", "b/2.png"], 7))
    assert "died abruptly" in msg and msg.endswith("while processing a/1.png, b/2.png")
    assert str(WorkerDied([f"{i}.png" for i in range(6)], 0)).endswith("0.png, 1.png, 2.png, 3.png and 2 more")
    assert str(WorkerDied([], 0)).endswith("between sketches")


def test_resume_of_a_run_killed_before_its_first_result(tmp_path, monkeypatch):
    """A journal holding only its header (killed before any sketch finished) resumes to the
    whole result: the header is kept, the first sketch is not taken for it."""
    import psc6k.commands.build_keypoints as bk

    src = tmp_path / "s"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"s{i}.png"), circle_sketch(r=30 + 10 * i))
    ref, out = tmp_path / "ref.csv", tmp_path / "out.csv"
    assert main(["build-keypoints", str(src), "--out", str(ref), "--no-progress"]) == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    with monkeypatch.context() as m:
        m.setattr(bk, "build_keypoints", interrupted)
        assert main(["build-keypoints", str(src), "--out", str(out), "--no-progress"]) == 130
    journal = tmp_path / "out.csv.journal"
    assert journal.read_bytes().count(b"\n") == 1, "only the header"
    assert main(["build-keypoints", str(src), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert out.read_bytes() == ref.read_bytes()


def test_a_thread_pool_loaded_after_the_first_sketch_is_limited_too():
    """torch (its own OpenMP) imported after a first keypoint call: single_threaded still
    limits every pool, not only those loaded when it first ran."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    code = ("import cv2, numpy as np\n"
            "from threadpoolctl import threadpool_info\n"
            "from psc6k.keypoints import sample_keypoints\n"
            "from psc6k.keypoints._morphology import single_threaded\n"
            "img = np.full((128, 128), 255, np.uint8); cv2.circle(img, (64, 64), 40, 0, 2)\n"
            "sample_keypoints(img)\n"
            "import torch\n"
            "with single_threaded():\n"
            "    print(sorted({i['num_threads'] for i in threadpool_info()}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[1]", r.stdout
