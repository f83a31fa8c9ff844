"""psc6k synth: warps and their inverse, the generated tree and CSVs, exact ground truth,
determinism, the bundled sample and user errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from psc6k import IMAGE_SIZE
from psc6k.cli import main as cli_main
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_clicks, read_keypoints_csv, read_train_pairs
from psc6k.pck import evaluate
from psc6k.sketchy import INVALID_LISTS, PHOTO_DIR, SKETCH_DIR, read_id_list
from psc6k.submission import Submission, load_submission
from psc6k.synth import category_names, generate
from psc6k.synth.warp import SmoothWarp, ThinPlateSpline, pixel_grid, random_warp, to_normalized, warp_flows

SMALL = dict(categories=3, photos_per_category=2, sketches_per_photo=2, train_photos_per_category=1, seed=7,
             flow_size=16)


# ------------------------------------------------------------------------------ warps
@pytest.mark.parametrize("seed", range(6))
def test_inverse_round_trips_within_half_a_pixel(seed):
    warp = random_warp(np.random.default_rng(seed))
    rng = np.random.default_rng(100 + seed)
    pts = rng.uniform(-20, IMAGE_SIZE + 20, (2000, 2))
    # both compositions, over the image and a margin around it
    assert np.abs(warp.forward(warp.inverse(pts)) - pts).max() < 0.5
    assert np.abs(warp.inverse(warp.forward(pts)) - pts).max() < 0.5
    # in fact to solver precision
    assert np.abs(warp.forward(warp.inverse(pts)) - pts).max() < 1e-5


def test_warps_are_not_near_identity():
    """The deformation must be large enough that the identity flow fails often (< 50% PCK@0.10)."""
    g = pixel_grid(17)[2:-2, 2:-2].reshape(-1, 2)
    moved = [np.linalg.norm(random_warp(np.random.default_rng(s)).forward(g) - g, axis=-1).mean() for s in range(20)]
    assert np.median(moved) > 20.0


def test_tps_interpolates_its_control_points_and_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    centers = rng.uniform(0, 255, (9, 2))
    disp = rng.normal(0, 5, (9, 2))
    tps = ThinPlateSpline.fit(centers, disp)
    np.testing.assert_allclose(tps(centers), disp, atol=1e-8)
    p = rng.uniform(0, 255, (20, 2))
    h = 1e-4
    num = np.stack([(tps(p + [h, 0]) - tps(p - [h, 0])) / (2 * h), (tps(p + [0, h]) - tps(p - [0, h])) / (2 * h)], -1)
    np.testing.assert_allclose(tps.jacobian(p), num, atol=1e-6)


def test_affine_warp_inverse_and_flows_by_hand():
    # x' = 2x + 3, y' = y - 5 : inverse x = (x' - 3) / 2
    warp = SmoothWarp(np.array([[2.0, 0, 3], [0, 1.0, -5]]))
    np.testing.assert_allclose(warp.forward([[10.0, 20.0]]), [[23.0, 15.0]])
    np.testing.assert_allclose(warp.inverse([[23.0, 15.0]]), [[10.0, 20.0]])
    s2p, p2s = warp_flows(warp, 2)
    # corners of a 2x2 align_corners grid are pixels 0 and 255
    np.testing.assert_allclose(s2p[0, 0], [(3 * 2 / 255) - 1, (-5 * 2 / 255) - 1], atol=1e-6)
    np.testing.assert_allclose(s2p[1, 1], [((2 * 255 + 3) * 2 / 255) - 1, ((255 - 5) * 2 / 255) - 1], atol=1e-6)
    np.testing.assert_allclose(p2s[0, 0], [((0 - 3) / 2) * 2 / 255 - 1, 5 * 2 / 255 - 1], atol=1e-6)
    ident_s2p, _ = warp_flows(SmoothWarp.identity(), 3)
    np.testing.assert_allclose(ident_s2p[..., 0], [[-1, 0, 1]] * 3, atol=1e-7)
    np.testing.assert_allclose(to_normalized([0.0, 127.5, 255.0]), [-1, 0, 1])


# ------------------------------------------------------------------------------ a generated set
@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "small"
    summary = generate(out, workers=1, progress=False, **SMALL)
    return out, summary


def test_layout_and_csvs_read_back_through_the_foundation(small_set):
    out, summary = small_set
    cats = sorted(category_names(3))
    assert summary.categories == cats
    assert sorted(p.name for p in (out / PHOTO_DIR).iterdir()) == cats
    assert sorted(p.name for p in (out / SKETCH_DIR).iterdir()) == cats
    for name in INVALID_LISTS:
        assert (out / "info" / f"invalid-{name}.txt").is_file()
    ann = read_annotations(out / "test_pairs_ps.csv")
    ann_st = read_annotations(out / "test_pairs_st.csv")
    assert ann.pairs == ann_st.pairs
    np.testing.assert_array_equal(ann.photo_kps, ann_st.photo_kps)
    assert len(ann) == 3 * 2 * 2 == summary.n_test_pairs
    # class = 1-based index in the sorted category list of the dataset
    assert ann.categories == tuple(cats)
    assert [cats[c - 1] for c in ann.cls] == ann.category
    for p, s in ann.pairs:
        assert (out / p).is_file() and (out / s).is_file()
    # test photos are exactly those of info/testset.txt; train photos are not in it
    testset = set(read_id_list(out / "info" / "testset.txt"))
    assert {Path(p).stem for p in ann.photo} == testset
    assert len(testset) == 3 * 2
    train = read_train_pairs(out / "train_pairs_ps.csv")
    assert len(train) == 3 * 1 * 2 == summary.n_train_pairs
    assert not {Path(p).stem for p in train.photo} & testset
    train_st = read_train_pairs(out / "train_pairs_st.csv")
    assert (train_st.photo, train_st.sketch) == (train.photo, train.sketch)
    kps = read_keypoints_csv(out / "keypoints.csv")
    for i, s in enumerate(ann.sketch):
        np.testing.assert_array_equal(kps[s], ann.sketch_kps[i])
    # images: 256x256 JPEG photos and PNG sketches
    img = cv2.imread(str(out / ann.photo[0]))
    assert img.shape == (256, 256, 3) and (out / ann.photo[0]).read_bytes()[:2] == b"\xff\xd8"
    assert (out / ann.sketch[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_invalid_sketches_exist_broken_and_are_never_paired(small_set):
    out, summary = small_set
    invalid = {}
    for name in INVALID_LISTS:
        for sid in read_id_list(out / "info" / f"invalid-{name}.txt"):
            invalid[sid] = name
    assert len(invalid) == summary.n_invalid >= 1
    ann = read_annotations(out / "test_pairs_ps.csv")
    train = read_train_pairs(out / "train_pairs_ps.csv")
    paired = {Path(s).stem for s in ann.sketch} | {Path(s).stem for s in train.sketch}
    assert not paired & set(invalid)
    files = {p.stem: p for p in (out / SKETCH_DIR).rglob("*.png")}
    for sid in invalid:
        assert sid in files
    # every sketch on disk is either paired or listed invalid
    assert set(files) == paired | set(invalid)
    stats = (out / "info" / "stats.csv").read_text().splitlines()
    assert stats[0].startswith("Category,")
    assert len(stats) - 1 == summary.n_sketches == len(files)


def test_ground_truth_flows_score_exactly_100(small_set):
    out, _ = small_set
    ann = read_annotations(out / "test_pairs_ps.csv")
    sub = load_submission(out / "gt_flows.npz")
    assert sub.kind == "flow" and sub.sketch_to_photo.shape == (len(ann), 16, 16, 2)
    res = evaluate(ann, sub, n_bootstrap=0).to_dict()
    assert res["overall"] == {"pck@0.05": 100.0, "pck@0.10": 100.0}
    assert res["mean_error_px"]["overall"] < 1.5


def test_photo_keypoints_are_the_warp_of_sketch_keypoints(small_set):
    """Reading the dense GT flows at the sketch keypoints gives the photo keypoints (and back)."""
    out, _ = small_set
    from psc6k.pck import flow_to_pixels, sample_flow

    ann = read_annotations(out / "test_pairs_ps.csv")
    sub = load_submission(out / "gt_flows.npz")
    s2p = flow_to_pixels(sample_flow(sub.sketch_to_photo, ann.sketch_kps))
    p2s = flow_to_pixels(sample_flow(sub.photo_to_sketch, ann.photo_kps))
    # bilinear reading of a 16x16 grid (17 px spacing) of a smooth warp: a pixel or two at worst
    assert np.abs(s2p - ann.photo_kps).max() < 2.0
    assert np.abs(p2s - ann.sketch_kps).max() < 2.0
    assert np.abs(s2p - ann.photo_kps).mean() < 0.5


def test_record_keypoints_and_flows_are_exactly_the_warp():
    from psc6k.synth.dataset import make_photo_record

    rec = make_photo_record("fish", 3, "test", seed=5, sketches_per_photo=2, flow_size=8)
    for sk in rec.sketches:
        if sk.invalid:
            continue
        expected = np.clip(np.round(sk.warp.forward(sk.sketch_kps), 3), 0, 255)
        np.testing.assert_array_equal(sk.photo_kps, expected)
        s2p, p2s = warp_flows(sk.warp, 8)
        np.testing.assert_array_equal(sk.flows[0], s2p)
        grid = pixel_grid(8)
        # photo_to_sketch is the inverse: mapping it forward lands back on the photo grid
        back = sk.warp.forward((p2s.astype(np.float64) + 1) * 255 / 2)
        assert np.abs(back - grid).max() < 0.5 * 255 / 2 * 2 ** -22 * 8 + 1e-3
        # sketch keypoints lie on ink
        img = cv2.imdecode(np.frombuffer(sk.png, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert img.min() < 128


def test_clicks_three_distinct_participants_and_about_one_percent_outliers(small_set):
    out, _ = small_set
    ann = read_annotations(out / "test_pairs_ps.csv")
    clicks = read_clicks(out / "clicks.csv")
    assert len(clicks) == len(ann) * 8 * 3
    groups = clicks.groupby(["photo", "sketch", "keypoint"])
    assert groups.ngroups == len(ann) * 8
    assert (groups["participant"].nunique() == 3).all()
    assert set(clicks["keypoint"]) == set(range(8))
    idx = ann.index()
    truth = np.array([ann.photo_kps[idx[(p, s)], k] for p, s, k in zip(clicks.photo, clicks.sketch, clicks.keypoint)])
    err = np.linalg.norm(clicks[["x", "y"]].to_numpy() - truth, axis=1)
    inlier = clicks["is_outlier"].astype(int).to_numpy() == 0
    assert np.median(err[inlier]) < 8 and (err[~inlier] > 30).all()


def test_bigger_click_set_has_about_one_percent_outliers():
    from psc6k.synth import simulate_clicks

    n = 400
    kps = np.random.default_rng(0).uniform(60, 190, (n, 8, 2))
    df = simulate_clicks([f"p/c/{i}.jpg" for i in range(n)], [f"s/c/{i}-1.png" for i in range(n)], kps, seed=0)
    assert 0.005 < df["is_outlier"].mean() < 0.02
    # noise varies by participant
    inl = df[df.is_outlier == 0]
    truth = kps[inl.photo.str.extract(r"(\d+)")[0].astype(int).to_numpy(), inl.keypoint.to_numpy()]
    e = np.linalg.norm(inl[["x", "y"]].to_numpy() - truth, axis=1)
    per = inl.assign(e=e).groupby("participant")["e"].mean()
    assert per.max() > 1.5 * per.min()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, small_set):
    ref, _ = small_set
    out = tmp_path / "again"
    generate(out, workers=2, progress=False, **SMALL)

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = digest(ref), digest(out)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_another_seed_gives_other_images(tmp_path):
    a = generate(tmp_path / "a", categories=1, photos_per_category=1, sketches_per_photo=1,
                 train_photos_per_category=0, seed=1, progress=False, clicks=False)
    b = generate(tmp_path / "b", categories=1, photos_per_category=1, sketches_per_photo=1,
                 train_photos_per_category=0, seed=2, progress=False, clicks=False)
    pa = next((tmp_path / "a" / PHOTO_DIR).rglob("*.jpg")).read_bytes()
    pb = next((tmp_path / "b" / PHOTO_DIR).rglob("*.jpg")).read_bytes()
    assert pa != pb and a.n_test_pairs == b.n_test_pairs == 1
    # one category: its class is 1 in the set's own list (not its index among Sketchy's names)
    ann = read_annotations(tmp_path / "a" / "test_pairs_ps.csv")
    assert ann.categories == ("robot",) and list(ann.cls) == [1]
    assert not (tmp_path / "a" / "train_pairs_ps.csv").exists()


# ------------------------------------------------------------------------------ user errors
def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    with pytest.raises(Psc6kError, match="`categories` must be at least 1"):  # the library names parameters
        generate(tmp_path / "x", categories=0, progress=False)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(Psc6kError, match="cannot write|not a folder"):
        generate(blocker / "sub", categories=1, progress=False)
    with pytest.raises(Psc6kError, match="exists and is not a folder"):
        generate(blocker, categories=1, progress=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    with pytest.raises(Psc6kError, match="not empty.*`force`"):
        generate(full, categories=1, progress=False)
    # the CLI prints the message, no traceback, exit status 2
    assert cli_main(["synth", "--out", str(full), "--categories", "1"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "another --out, or --force" in err and "Traceback" not in err
    assert cli_main(["synth", "--out", str(tmp_path / "y"), "--categories", "0"]) == 2
    assert "--categories must be at least 1" in capsys.readouterr().err  # ... the command its options
    # --force replaces only synth's own files
    assert cli_main(["synth", "--out", str(full), "--categories", "1", "--photos-per-category", "1",
                     "--sketches-per-photo", "1", "--train-photos-per-category", "0", "--force", "--no-progress"]) == 0
    assert (full / "mine.txt").read_text() == "keep me" and (full / "test_pairs_ps.csv").is_file()


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(Psc6kError, match="cannot write"):
            generate(ro, categories=1, progress=False)
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------ the bundled sample
def test_bundled_sample(record_property):
    from psc6k.data import sample_path

    root = sample_path()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 3 * 1024 * 1024
    ann = read_annotations(root / "test_pairs_ps.csv")
    assert len(ann) == 40 and len(set(ann.category)) == 10
    for p, s in ann.pairs:
        assert (root / p).is_file() and (root / s).is_file()
    assert len(read_train_pairs(root / "train_pairs_ps.csv")) >= 5
    gt = evaluate(ann, load_submission(root / "gt_flows.npz"), n_bootstrap=0).to_dict()["overall"]
    assert gt == {"pck@0.05": 100.0, "pck@0.10": 100.0}
    # identity flow = the normalised identity grid on both sides
    g = np.linspace(-1, 1, 16)
    grid = np.stack(np.meshgrid(g, g), -1).astype(np.float32)
    ident = np.broadcast_to(grid, (len(ann), 16, 16, 2))
    res = evaluate(ann, Submission("identity", "flow", ann.photo, ann.sketch, ident, ident), n_bootstrap=0).to_dict()
    record_property("identity_pck", res["overall"])
    print(f"identity flow on the bundled sample: PCK@0.05 {res['overall']['pck@0.05']:.2f}%, "
          f"PCK@0.10 {res['overall']['pck@0.10']:.2f}%")
    assert res["overall"]["pck@0.10"] < 50.0


def test_sample_images_are_what_the_documented_command_writes():
    """Re-rendering one photo of the sample with the documented arguments gives the shipped bytes."""
    from psc6k.data import SAMPLE_COMMAND, sample_path
    from psc6k.synth.dataset import make_photo_record

    args = SAMPLE_COMMAND.split()
    opt = {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--") and i + 1 < len(args)}
    root = sample_path()
    ann = read_annotations(root / "test_pairs_ps.csv")
    cats = sorted(category_names(int(opt["--categories"])))
    for cat in cats[:2]:  # a real-photo and a procedural one
        rec = make_photo_record(cat, 0, "test", seed=int(opt["--seed"]), force_broken=cats.index(cat),
                                sketches_per_photo=int(opt["--sketches-per-photo"]), flow_size=int(opt["--flow-size"]),
                                jpeg_quality=int(opt["--jpeg-quality"]))
        # bytes are equal with the OpenCV / zlib builds that made the sample; another build may
        # encode or anti-alias a little differently, which must stay invisible
        shipped = cv2.imread(str(root / rec.relpath)).astype(int)
        assert np.abs(shipped - cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), 1)).mean() < 1.0
        for sk in rec.sketches:
            shipped = cv2.imread(str(root / sk.relpath), cv2.IMREAD_GRAYSCALE)
            fresh = cv2.imdecode(np.frombuffer(sk.png, np.uint8), cv2.IMREAD_GRAYSCALE)
            assert np.abs(shipped.astype(int) - fresh).mean() < 1.0
            if sk.invalid is None and np.array_equal(shipped, fresh):
                i = ann.sketch.index(sk.relpath)
                stale = f"the bundled sample is stale (psc6k.keypoints changed?); regenerate it with: {SAMPLE_COMMAND}"
                np.testing.assert_array_equal(ann.sketch_kps[i], sk.sketch_kps, err_msg=stale)
                np.testing.assert_array_equal(ann.photo_kps[i], sk.photo_kps, err_msg=stale)


def test_preview_contact_sheet(tmp_path, small_set):
    from psc6k.synth.preview import contact_sheet

    out, _ = small_set
    png = contact_sheet(out, tmp_path / "sheet.png", n_pairs=4, columns=2)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 2 * 256 and img.shape[1] > 2 * 2 * 256
    with pytest.raises(Psc6kError, match="cannot write"):
        contact_sheet(out, tmp_path / "file.txt" / "x.png") if (tmp_path / "file.txt").write_text("x") else None


def test_a_drawing_the_keypoint_builder_rejects_is_redrawn(monkeypatch):
    import psc6k.keypoints as keypoints
    from psc6k.synth.dataset import MAX_ATTEMPTS, make_photo_record

    real = keypoints.sample_keypoints
    calls = []

    def flaky(image, k=8, seed=0):
        calls.append(image.copy())
        if len(calls) <= 2:
            raise keypoints.SketchError("the strokes form 2 separate pieces", reason="not_connected")
        return real(image, k, seed)

    monkeypatch.setattr(keypoints, "sample_keypoints", flaky)
    rec = make_photo_record("kite", 0, "test", seed=0, sketches_per_photo=1, flow_size=4)
    sk = rec.sketches[0]
    assert len(calls) == 3 and sk.sketch_kps.shape == (8, 2)
    shipped = cv2.imdecode(np.frombuffer(sk.png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(shipped, calls[-1][..., 0]) and not np.array_equal(calls[0], calls[-1])

    def never(image, k=8, seed=0):
        raise keypoints.SketchError("empty", reason="empty")

    monkeypatch.setattr(keypoints, "sample_keypoints", never)
    with pytest.raises(Psc6kError, match=rf"syn\d+_00001-1: no drawing usable .* after {MAX_ATTEMPTS}"):
        make_photo_record("kite", 0, "test", seed=0, sketches_per_photo=1, flow_size=4)


def test_the_pair_builder_reads_the_tree_as_a_sketchy_download(small_set, tmp_path):
    """``psc6k build-pairs`` on the synthetic tree skips the invalid sketches and finds our pairs."""
    import csv

    out, _ = small_set
    # all four lists: the synthetic ambiguous/context sketches are deliberately broken drawings
    # (build-pairs' default drops only the paper's error and pose lists)
    assert cli_main(["build-pairs", str(out), "--out", str(tmp_path / "bp"), "--sketches-per-photo",
                     str(SMALL["sketches_per_photo"]), "--invalid-lists", "error,pose,ambiguous,context"]) == 0
    with open(tmp_path / "bp" / "test_pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ann = read_annotations(out / "test_pairs_ps.csv")
    assert {(r["photo"], r["sketch"]) for r in rows} == set(ann.pairs)
    train = read_train_pairs(tmp_path / "bp" / "train_pairs_ps.csv")
    ours = read_train_pairs(out / "train_pairs_ps.csv")
    assert set(zip(train.photo, train.sketch)) == set(zip(ours.photo, ours.sketch))
