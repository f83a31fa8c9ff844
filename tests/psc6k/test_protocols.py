"""Named protocols (SPEC §8): selection against an independent re-implementation of SketchFusion's
rule, the strict boundary by hand, provenance and per-keypoint PCK in every result."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from psc6k import __version__
from psc6k.compare import compare, min_attainable_p, sign_flip_p_value, small_sample_note, verdict
from psc6k.errors import Psc6kError, SubmissionError
from psc6k.formats import Annotations, read_annotations, write_test_pairs_ps
from psc6k.pck import SCORER_VERSION, evaluate, pck_correct
from psc6k.protocols import PROTOCOLS, get_protocol
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath
from psc6k.submission import Submission

CATS = SKETCHY_CATEGORIES[:3]


def benchmark_like(tmp_path, photos_per_class=12, sketches_per_photo=5, seed=0):
    """A test_pairs_ps.csv shaped like PSC6K (rows shuffled within the file), written and read back."""
    rng = np.random.default_rng(seed)
    ids = {(k, p): f"n{k:03d}_{rng.integers(1000, 9999)}_{p:02d}" for k in range(len(CATS))
           for p in range(photos_per_class)}  # random ids: sorted order != creation order
    rows = [(c, ids[k, p], s) for k, c in enumerate(CATS)
            for p in range(photos_per_class) for s in range(1, sketches_per_photo + 1)]
    order = rng.permutation(len(rows))
    photo = [photo_relpath(rows[i][0], rows[i][1]) for i in order]
    sketch = [sketch_relpath(rows[i][0], f"{rows[i][1]}-{rows[i][2]}") for i in order]
    kps = rng.uniform(20, 235, (len(rows), 8, 2)).round(3)
    path = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(Annotations.from_arrays(photo, sketch, kps, kps[:, ::-1]), path)
    return path


def sketchfusion_reference(csv_path) -> set:
    """SPEC §8 in plain pandas, not psc6k's code: per class, rows sorted by photo, positions 30..49."""
    df = pd.read_csv(csv_path)
    picked = []
    for _, group in df.groupby("class", sort=True):
        picked.append(group.sort_values("photo", kind="mergesort").iloc[30:50])
    sel = pd.concat(picked)
    return set(zip(sel["photo"], sel["sketch"]))


def keypoint_sub(ann, rows, s2p, p2s):
    return Submission("m", "keypoints", [ann.photo[i] for i in rows], [ann.sketch[i] for i in rows],
                      np.asarray(s2p, float), np.asarray(p2s, float))


def test_sketchfusion_selection_matches_independent_reference(tmp_path):
    path = benchmark_like(tmp_path)
    ann = read_annotations(path)
    rows = PROTOCOLS["sketchfusion"].select(ann)
    got = {(ann.photo[i], ann.sketch[i]) for i in rows}
    assert got == sketchfusion_reference(path)
    assert len(got) == 20 * len(CATS)
    per_photo = pd.Series([p for p, _ in got]).value_counts()
    assert (per_photo == 5).all() and len(per_photo) == 4 * len(CATS)  # a photo's 5 sketches together
    assert PROTOCOLS["psc6k"].select(ann).tolist() == list(range(len(ann)))


def test_sketchfusion_ties_keep_file_order_like_a_stable_sort(tmp_path):
    # 7 sketches per photo: position 30 falls inside a photo's group, so the tie order decides
    path = benchmark_like(tmp_path, photos_per_class=8, sketches_per_photo=7, seed=3)
    ann = read_annotations(path)
    got = {(ann.photo[i], ann.sketch[i]) for i in PROTOCOLS["sketchfusion"].select(ann)}
    assert got == sketchfusion_reference(path)


def test_strict_boundary_by_hand():
    target = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    pred = np.array([[[12.8, 0.0], [0.0, 12.8 + 1e-9]]])  # exactly alpha*256, and just beyond
    assert pck_correct(pred, target, 0.05).tolist() == [[True, False]]
    assert pck_correct(pred, target, 0.05, strict=True).tolist() == [[False, False]]
    assert pck_correct(np.array([[[12.7, 0.0]]]), np.zeros((1, 1, 2)), 0.05, strict=True).tolist() == [[True]]


def test_boundary_keypoint_counts_under_psc6k_not_sketchfusion(tmp_path):
    ann = read_annotations(benchmark_like(tmp_path))
    ann.photo_kps[:, :, 0] = 0.0  # x = 0 so that 0 + 12.8 is exactly 12.8 px away
    rows = PROTOCOLS["sketchfusion"].select(ann)
    s2p = ann.photo_kps[rows].copy()
    s2p[:, 0, 0] += 12.8  # keypoint 0 of sketch->photo exactly on the 0.05 threshold
    p2s = ann.sketch_kps[rows].copy()
    sub = keypoint_sub(ann, rows, s2p, p2s)
    paper = evaluate(ann, sub, (0.05,), allow_partial=True, n_bootstrap=0)
    sf = evaluate(ann, sub, (0.05,), n_bootstrap=0, protocol="sketchfusion")
    assert paper.overall["pck@0.05"] == 100.0
    assert sf.overall["pck@0.05"] == pytest.approx(100 * 15 / 16)
    assert sf.per_keypoint["sketch_to_photo"]["pck@0.05"] == [0.0] + [100.0] * 7
    assert sf.per_keypoint["photo_to_sketch"]["pck@0.05"] == [100.0] * 8
    assert sf.n_annotated == len(rows) == 60 and sf.protocol["comparison"] == "distance < threshold"
    # compare counts with the same rule: the boundary keypoint is the whole difference
    perfect = keypoint_sub(ann, rows, ann.photo_kps[rows], p2s)
    cmp = compare(ann, sub, perfect, (0.05,), n_bootstrap=0, protocol="sketchfusion")
    assert cmp.pck_a["pck@0.05"] == sf.overall["pck@0.05"] and cmp.delta["pck@0.05"] == pytest.approx(-100 / 16)
    assert compare(ann, sub, perfect, (0.05,), n_bootstrap=0, allow_partial=True).delta["pck@0.05"] == 0.0


def test_sketchfusion_ignores_other_rows_and_requires_its_own(tmp_path):
    ann = read_annotations(benchmark_like(tmp_path))
    everything = keypoint_sub(ann, range(len(ann)), ann.photo_kps, ann.sketch_kps)
    res = evaluate(ann, everything, n_bootstrap=0, protocol="sketchfusion")
    assert res.n_pairs == 60 and set(res.ann_index) == set(PROTOCOLS["sketchfusion"].select(ann))
    rows = PROTOCOLS["sketchfusion"].select(ann)[1:]
    with pytest.raises(SubmissionError, match="1 of the 60 pairs this protocol scores are missing"):
        evaluate(ann, keypoint_sub(ann, rows, ann.photo_kps[rows], ann.sketch_kps[rows]), protocol="sketchfusion")
    outside = np.setdiff1d(np.arange(len(ann)), PROTOCOLS["sketchfusion"].select(ann))[:3]
    with pytest.raises(SubmissionError, match="no submitted pair is among the 60"):
        evaluate(ann, keypoint_sub(ann, outside, ann.photo_kps[outside], ann.sketch_kps[outside]),
                 protocol="sketchfusion", allow_partial=True)


def test_sketchfusion_on_a_small_file_is_one_line(tmp_path):
    ann = read_annotations(benchmark_like(tmp_path, photos_per_class=2))
    with pytest.raises(Psc6kError, match="at most 10 pairs per class: nothing to score"):
        PROTOCOLS["sketchfusion"].select(ann)
    with pytest.raises(Psc6kError, match="unknown protocol 'pf-pascal'"):
        get_protocol("pf-pascal")


def test_protocol_hashes_are_stable_and_distinct():
    a, b = PROTOCOLS["psc6k"], PROTOCOLS["sketchfusion"]
    text = json.dumps(a.definition(), sort_keys=True, separators=(",", ":"))
    assert a.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert a.sha256 != b.sha256 and len({a.sha256, b.sha256}) == 2


def test_compare_refuses_two_protocols(tmp_path):
    ann = read_annotations(benchmark_like(tmp_path))
    sub = keypoint_sub(ann, range(len(ann)), ann.photo_kps, ann.sketch_kps)
    from psc6k.compare import compare_results

    ra = evaluate(ann, sub, n_bootstrap=0)
    rb = evaluate(ann, sub, n_bootstrap=0, protocol="sketchfusion")
    with pytest.raises(Psc6kError, match="numbers of two protocols do not compare"):
        compare_results(ann, ra, rb)
    cmp = compare(ann, sub, sub, n_bootstrap=0, protocol="sketchfusion")
    assert cmp.provenance["protocol"] == "sketchfusion" and cmp.n_pairs == 60


def test_eval_json_carries_provenance_and_per_keypoint(tmp_path):
    path = benchmark_like(tmp_path)
    ann = read_annotations(path)
    s2p = ann.photo_kps.copy()
    s2p[:, 3] += 100.0  # keypoint 3 always wrong in sketch->photo
    sub = keypoint_sub(ann, range(len(ann)), s2p, ann.sketch_kps)
    from psc6k.submission import save_submission

    save_submission(sub, tmp_path / "sub.json")
    out = subprocess.run([sys.executable, "-m", "psc6k", "eval", str(tmp_path / "sub.json"), "--annotations", str(path),
                          "--json", "--bootstrap", "0"], capture_output=True, text=True, check=True).stdout
    res = json.loads(out)
    assert res["provenance"] == {"protocol": "psc6k", "protocol_sha256": PROTOCOLS["psc6k"].sha256,
                                 "annotations_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                 "psc6k_version": __version__, "scorer_version": SCORER_VERSION}
    assert res["per_keypoint"]["sketch_to_photo"]["pck@0.10"] == [100.0] * 3 + [0.0] + [100.0] * 4
    assert res["per_keypoint"]["photo_to_sketch"]["pck@0.05"] == [100.0] * 8
    assert res["protocol"]["name"] == "psc6k"


def test_protocols_command_lists_both(tmp_path):
    out = json.loads(subprocess.run([sys.executable, "-m", "psc6k", "protocols", "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    assert out["default"] == "psc6k"
    assert {p["name"]: p["sha256"] for p in out["protocols"]} == {n: p.sha256 for n, p in PROTOCOLS.items()}
    text = subprocess.run([sys.executable, "-m", "psc6k", "protocols"], capture_output=True, text=True, check=True).stdout
    assert "distance < threshold" in text and "psc6k (default)" in text


# ------------------------------------------------------------------ small-sample honesty
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_min_attainable_p_is_the_smallest_over_all_sign_patterns(n):
    # brute force: every vector of per-pair differences in {-2..2}^n, exact test
    smallest = min(sign_flip_p_value(d) for d in itertools.product(range(-2, 3), repeat=n) if any(d))
    assert min_attainable_p(n) == pytest.approx(smallest) == pytest.approx(2.0 ** (1 - n))


def test_small_sample_note_and_verdict():
    cats = {"a": {"n_pairs": 4, "min_attainable_p": min_attainable_p(4)},
            "b": {"n_pairs": 50, "min_attainable_p": min_attainable_p(50)}}
    note = small_sample_note(cats)
    assert note.startswith("1 of 2 categories") and "4 pairs: p >= 0.125" in note
    assert small_sample_note({"b": cats["b"]}) == ""
    assert verdict(5.0, [0.1, 9.0], 0.049) == "A better"
    assert verdict(5.0, [-0.1, 9.0], 0.001) == "no significant difference"  # CI overlaps zero
    assert verdict(5.0, [0.1, 9.0], 0.05) == "no significant difference"   # p not below 0.05
    assert verdict(-5.0, [-9.0, -0.1], 0.01, "x", "y") == "y better"
