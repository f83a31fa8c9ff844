"""psc6k check-split: test images in a training list, from every list format SPEC §3 and Sketchy use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from psc6k.data import sample_path
from psc6k.errors import FormatError
from psc6k.formats import TrainPairs, read_annotations, write_train_pairs_ps, write_train_pairs_st
from psc6k.splits import check_split, is_sketch_id, read_image_set
from psc6k.sketchy import image_id

S = sample_path()


def psc6k(*args):
    return subprocess.run([sys.executable, "-m", "psc6k", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def test_ids():
    ann = read_annotations(S / "test_pairs_ps.csv")
    return ann, {image_id(p) for p in ann.photo}, {image_id(s) for s in ann.sketch}


def test_every_list_format_reads_the_same_ids(tmp_path, test_ids):
    ann, photos, sketches = test_ids
    for name in ("test_pairs_ps.csv", "test_pairs_st.csv"):
        got = read_image_set(S / name)
        assert (got.photos, got.sketches) == (photos, sketches), name
    pairs = TrainPairs.from_paths(ann.photo, ann.sketch)
    write_train_pairs_ps(pairs, tmp_path / "ps.csv")
    write_train_pairs_st(pairs, tmp_path / "st.csv")
    (tmp_path / "list.csv").write_text("photo,sketch\n" + "".join(f"{p},{s}\n" for p, s in zip(ann.photo, ann.sketch)))
    # Sketchy id list: category prefix or not, extension or not, CRLF, blank lines
    lines = [f"{p.split('/')[-2]}/{image_id(p)}.jpg" for p in ann.photo] + [image_id(s) for s in ann.sketch]
    (tmp_path / "ids.txt").write_text("\r\n".join(lines) + "\r\n\r\n")
    for name in ("ps.csv", "st.csv", "list.csv", "ids.txt"):
        got = read_image_set(tmp_path / name)
        assert (got.photos, got.sketches) == (photos, sketches), name
    folder = read_image_set(S / "rendered_256x256")
    assert photos <= folder.photos and sketches <= folder.sketches


def test_clean_split_exit_0_and_overlap_exit_1_names_them(tmp_path, test_ids):
    ann, photos, sketches = test_ids
    r = psc6k("check-split", S / "train_pairs_ps.csv", S / "test_pairs_ps.csv", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["n_test_photos"] == len(photos) and out["photos"]["count"] == 0
    # one leaked photo and two leaked sketches
    leak = [image_id(ann.photo[0]), image_id(ann.sketch[1]), image_id(ann.sketch[2]), "unrelated_1"]
    (tmp_path / "train.txt").write_text("\n".join(leak) + "\n")
    r = psc6k("check-split", tmp_path / "train.txt", S / "test_pairs_ps.csv", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["photos"] == {"count": 1, "first": [leak[0]]}
    assert out["sketches"] == {"count": 2, "first": sorted(leak[1:3])}
    r = psc6k("check-split", S / "test_pairs_st.csv", S / "test_pairs_ps.csv")
    assert r.returncode == 1
    n = len(photos)
    assert f"{n} test photos (" in r.stdout and f"and {n - 5} more)" in r.stdout and f"{len(sketches)} test sketches" in r.stdout


def test_bad_inputs_are_one_line_exit_2(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.csv").write_text("photo,sketch,class,flip\na,b,1,7\n")
    (tmp_path / "nofolder").mkdir()
    for bad in (tmp_path / "missing.csv", tmp_path / "empty.txt", tmp_path / "bad.csv", tmp_path / "nofolder"):
        r = psc6k("check-split", bad, S / "test_pairs_ps.csv")
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(FormatError, match="flip must be 0 or 1"):
        read_image_set(tmp_path / "bad.csv")


def test_sketch_ids():
    assert is_sketch_id("n02691156_10151-3") and not is_sketch_id("n02691156_10151")
    assert not is_sketch_id("ext-photo_12a") and is_sketch_id("ext-photo_12-10")  # only a trailing -<n>
    assert check_split(S / "test_pairs_ps.csv", S / "test_pairs_ps.csv").ok is False
