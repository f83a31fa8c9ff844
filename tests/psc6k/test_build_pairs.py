"""``psc6k build-pairs`` and ``psc6k.pairs.build_pairs`` on a small Sketchy-shaped tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from psc6k.cli import main
from psc6k.errors import Psc6kError
from psc6k.formats import read_pair_list, read_train_pairs
from psc6k.pairs import build_pairs, sample_sketches
from psc6k.sketchy import INVALID_LISTS, PHOTO_DIR, SKETCH_DIR, SKETCHY_CATEGORIES, class_index

CATS = ("airplane", "cat", "zebra")


def make_tree(root: Path, *, n_photos=4, n_sketches=7, crlf=True) -> dict:
    """Sketchy-shaped tree: per category ``n_photos`` photos (the first 2 are test photos), each
    with ``n_sketches`` sketches; a few sketches invalid; one test photo with only 3 sketches
    and 1 of them invalid. Returns facts for the assertions."""
    facts = {"test": [], "invalid": {}, "short": None}
    for ci, cat in enumerate(CATS):
        (root / PHOTO_DIR / cat).mkdir(parents=True)
        (root / SKETCH_DIR / cat).mkdir(parents=True)
        for p in range(n_photos):
            pid = f"n0{ci}000000_{100 + p}"
            (root / PHOTO_DIR / cat / f"{pid}.jpg").write_bytes(b"jpg")
            ns = 3 if (cat == "cat" and p == 0) else n_sketches
            for s in range(1, ns + 1):
                (root / SKETCH_DIR / cat / f"{pid}-{s}.png").write_bytes(b"png")
            if p < 2:
                facts["test"].append((cat, pid))
    short_pid = "n01000000_100"
    facts["short"] = short_pid
    invalid = {
        "error": ["n00000000_100-1", short_pid + "-2"],
        "ambiguous": ["n00000000_100-2"],
        "pose": ["n02000000_101-7"],
        "context": ["n00000000_102-1"],  # a training photo
    }
    facts["invalid"] = invalid
    nl = "\r\n" if crlf else "\n"
    info = root / "info"
    info.mkdir()
    for name, ids in invalid.items():
        # mixed styles: with category prefix and extension, bare, blank lines
        lines = [f"airplane/{i}.png" if k == 0 else f" {i} " for k, i in enumerate(ids)] + [""]
        (info / f"invalid-{name}.txt").write_bytes(nl.join(lines).encode())
    lines = [f"{cat}/{pid}.jpg" if k % 2 == 0 else pid for k, (cat, pid) in enumerate(facts["test"])]
    (info / "testset.txt").write_bytes((nl.join(lines) + nl + nl).encode())
    return facts


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "Sketchy"
    return root, make_tree(root)


def test_build_pairs_samples_valid_sketches(tree):
    root, facts = tree
    res = build_pairs(root, seed=0, invalid_lists=INVALID_LISTS)
    test = res.test
    invalid_ids = {i for ids in facts["invalid"].values() for i in ids}
    sketch_ids = [Path(s).stem for s in test.sketch]
    assert not invalid_ids & set(sketch_ids)
    # 6 test photos: 5 with 5 sketches, the short one with its 2 valid sketches
    per_photo = {}
    for p, s in zip(test.photo, test.sketch):
        assert Path(s).stem.rsplit("-", 1)[0] == Path(p).stem, "sketch belongs to its photo"
        assert p.startswith(PHOTO_DIR + "/") and s.startswith(SKETCH_DIR + "/")
        per_photo.setdefault(Path(p).stem, []).append(Path(s).stem)
    assert len(per_photo) == 6
    counts = {pid: len(v) for pid, v in per_photo.items()}
    assert counts.pop(facts["short"]) == 2
    assert set(counts.values()) == {5}
    assert sorted(per_photo[facts["short"]]) == [facts["short"] + "-1", facts["short"] + "-3"]
    assert len(test) == 27
    assert res.short_photos == [{"photo": f"{PHOTO_DIR}/cat/{facts['short']}.jpg", "n_valid": 2, "n_sketches": 3}]
    # class is the index among the 125 Sketchy names
    for p, c in zip(test.photo, test.cls):
        assert c == class_index(p.split("/")[-2])
    # no sketch twice
    assert len(set(test.sketch)) == len(test.sketch)


def test_train_split_is_every_valid_sketch_of_the_other_photos(tree):
    root, facts = tree
    res = build_pairs(root, seed=0, invalid_lists=INVALID_LISTS)
    test_photos = set(res.test.photo)
    assert not test_photos & set(res.train.photo)
    # 3 categories x 2 training photos x 7 sketches, minus the invalid context sketch
    assert len(res.train) == 3 * 2 * 7 - 1
    assert "n00000000_102-1" not in {Path(s).stem for s in res.train.sketch}
    assert res.summary["n_train_photos"] == 6


def test_seed_determinism_and_per_photo_independence(tree):
    root, facts = tree
    a = build_pairs(root, seed=1)
    b = build_pairs(root, seed=1)
    assert a.test.sketch == b.test.sketch
    seeds = {tuple(build_pairs(root, seed=s).test.sketch) for s in range(6)}
    assert len(seeds) > 1, "the seed changes the sample"
    # removing another photo from the test list does not change this photo's sample
    cand = [(f"x-{i}", i) for i in range(7)]
    assert sample_sketches(cand, 5, 3, "p1") == sample_sketches(cand, 5, 3, "p1")
    assert sample_sketches(cand[:4], 5, 3, "p1") == cand[:4]
    picked = sample_sketches(cand, 5, 3, "p1")
    assert [c[1] for c in picked] == sorted(c[1] for c in picked)


def test_choosing_invalid_lists(tree):
    root, facts = tree
    keep_all = build_pairs(root, seed=0, invalid_lists=())
    # the short photo has 3 sketches, all valid now, still fewer than 5
    assert [sp["n_valid"] for sp in keep_all.short_photos] == [3]
    assert len(keep_all.train) == 42
    only_error = build_pairs(root, seed=0, invalid_lists=("error",))
    assert "n00000000_102-1" in {Path(s).stem for s in only_error.train.sketch}
    assert only_error.short_photos[0]["n_valid"] == 2
    with pytest.raises(Psc6kError, match="unknown invalid list"):
        build_pairs(root, invalid_lists=("bogus",))


def test_missing_and_mislabelled_test_photos(tree):
    root, facts = tree
    with open(root / "info" / "testset.txt", "a", newline="") as fh:
        fh.write("airplane/n09999999_1.jpg\r\n")
    res = build_pairs(root)
    assert res.missing_photos == ["n09999999_1"]
    assert res.summary["n_test_photos"] == 6


def test_cli_writes_the_files(tree, tmp_path, capsys):
    root, facts = tree
    out = tmp_path / "out"
    status = main(["build-pairs", str(root), "--out", str(out), "--seed", "0",
                   "--invalid-lists", "error,pose,ambiguous,context"])
    assert status == 0
    captured = capsys.readouterr()
    assert "only 2 valid sketches" in captured.err and facts["short"] in captured.err
    assert "27 test pairs" in captured.out
    test = read_pair_list(out / "test_pairs.csv")
    assert len(test) == 27
    header = (out / "test_pairs.csv").read_text().splitlines()[0]
    assert header == "photo,sketch,class"
    ps = (out / "train_pairs_ps.csv").read_text().splitlines()
    st = (out / "train_pairs_st.csv").read_text().splitlines()
    assert ps[0] == "photo,sketch,class,flip" and len(ps) == 1 + 2 * 41
    assert st[0] == "source_image,target_image,class,flip" and len(st) == 1 + 4 * 41
    assert [r.rsplit(",", 1)[1] for r in ps[1:3]] == ["0", "1"]
    train = read_train_pairs(out / "train_pairs_ps.csv")
    assert len(train) == 41
    assert read_train_pairs(out / "train_pairs_st.csv").sketch == train.sketch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test_pairs"] == 27 and summary["n_short_photos"] == 1
    assert summary["invalid_lists_dropped"] == ["error", "pose", "ambiguous", "context"]
    assert summary["invalid_sketches_on_disk"]["error"] == 2
    # same seed, same bytes
    out2 = tmp_path / "out2"
    assert main(["build-pairs", str(root), "--out", str(out2), "--seed", "0", "--json",
                 "--invalid-lists", "error,pose,ambiguous,context"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test_pairs"] == 27
    for name in ("test_pairs.csv", "train_pairs_ps.csv", "train_pairs_st.csv"):
        assert (out / name).read_bytes() == (out2 / name).read_bytes()


def test_cli_options_and_errors(tree, tmp_path, capsys):
    root, facts = tree
    out = tmp_path / "o"
    assert main(["build-pairs", str(root), "--out", str(out), "--sketches-per-photo", "2",
                 "--invalid-lists", "none", "--no-train"]) == 0
    assert not (out / "train_pairs_ps.csv").exists()
    assert len(read_pair_list(out / "test_pairs.csv")) == 12
    capsys.readouterr()
    assert main(["build-pairs", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a directory" in capsys.readouterr().err
    (root / "info" / "testset.txt").unlink()
    assert main(["build-pairs", str(root), "--out", str(out)]) == 2
    assert "testset.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build-pairs", str(root), "--out", str(out), "--invalid-lists", "error,wrong"])
    assert "unknown list" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["build-pairs", str(empty), "--out", str(out)]) == 2
    assert "not a Sketchy root" in capsys.readouterr().err


def test_missing_invalid_list_is_a_warning(tree, tmp_path, capsys):
    root, facts = tree
    (root / "info" / "invalid-pose.txt").unlink()
    assert main(["build-pairs", str(root), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "invalid-pose.txt not found" in err
    assert "n02000000_101-7" in (tmp_path / "o" / "test_pairs.csv").read_text()


def test_pairs_then_keypoints_end_to_end(tree, tmp_path, capsys):
    import cv2

    from psc6k.formats import read_keypoints_csv

    root, facts = tree
    for i, p in enumerate(sorted((root / SKETCH_DIR).rglob("*.png"))):  # real drawings now
        img = np.full((256, 256), 255, np.uint8)
        cv2.ellipse(img, (128, 128), (50 + i % 30, 70), i * 7, 0, 360, 0, 2, cv2.LINE_AA)
        cv2.imwrite(str(p), img)
    out = tmp_path / "build"
    assert main(["build-pairs", str(root), "--out", str(out)]) == 0
    # no --images: the Sketchy root comes from summary.json
    assert main(["build-keypoints", str(out / "test_pairs.csv"), "--out", str(out / "keypoints.csv"),
                 "--no-progress"]) == 0
    kps = read_keypoints_csv(out / "keypoints.csv")
    assert list(kps) == read_pair_list(out / "test_pairs.csv").sketch
    assert all(v.shape == (8, 2) and np.isfinite(v).all() for v in kps.values())


def test_default_drops_the_papers_two_lists_and_the_option_keeps_the_choice(tree, tmp_path):
    """SPEC §2 / paper §2.1: off-target (error) and wrong-perspective (pose) sketches are dropped
    by default; ambiguous and context sketches stay in the pool unless asked for."""
    root, facts = tree
    out = tmp_path / "default"
    assert main(["build-pairs", str(root), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["invalid_lists_dropped"] == ["error", "pose"]
    train = {Path(s).stem for s in read_train_pairs(out / "train_pairs_ps.csv").sketch}
    test = {Path(s).stem for s in read_pair_list(out / "test_pairs.csv").sketch}
    pool = train | test
    assert not pool & set(facts["invalid"]["error"] + facts["invalid"]["pose"])
    assert "n00000000_102-1" in train  # context: kept
    res = build_pairs(root, seed=0)
    assert res.summary["invalid_lists_dropped"] == ["error", "pose"]
    assert {Path(s).stem for s in res.train.sketch} == train
    # the ambiguous sketch of a test photo is a candidate again: the short photo's count too
    assert res.short_photos[0]["n_valid"] == 2
    out4 = tmp_path / "four"
    assert main(["build-pairs", str(root), "--out", str(out4), "--invalid-lists",
                 "error,pose,ambiguous,context"]) == 0
    train4 = {Path(s).stem for s in read_train_pairs(out4 / "train_pairs_ps.csv").sketch}
    assert "n00000000_102-1" not in train4 and train4 < train
