"""psc6k/groundtruth.py: the one clicks -> annotations -> report -> CSVs pipeline, its one report
schema, and the bytes it writes (the same through `psc6k aggregate`, the demo and the export)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from psc6k.aggregate import aggregate_clicks
from psc6k.cli import main
from psc6k.data import sample_path
from psc6k.formats import read_annotations, read_clicks
from psc6k.groundtruth import REPORT_KEYS, counted_clicks, ground_truth_from_clicks

PHOTO = "rendered_256x256/256x256/photo/tx_000100000000/airplane/n1_{}.jpg"
SKETCH = "rendered_256x256/256x256/sketch/tx_000100000000/airplane/n1_{}-1.png"

#: sha256 of what `psc6k aggregate` wrote for the bundled sample before the pipeline had one home
#: (main at d291a90): the CSVs must stay byte-identical.
SAMPLE_SHA256 = {"test_pairs_ps.csv": "d7bac9c4eb2f4f5354c60161c9bcb3aecbcb79b93cb93bc187b95531e89d4cd0",
                 "test_pairs_st.csv": "b4c79ad099d7951645bf3322572105412d7b0f0f4ac63cd93d2c5773bca91a91"}


def _clicks(pairs, keypoints=range(8), xy=lambda p, k, j: (10.0 * p + k + j, 20.0 + k), n=3, **extra):
    rows = [{"participant": f"u{j}", "photo": PHOTO.format(p), "sketch": SKETCH.format(p), "keypoint": k,
             "x": xy(p, k, j)[0], "y": xy(p, k, j)[1], **extra} for p in pairs for k in keypoints for j in range(n)]
    return pd.DataFrame(rows)


def test_sample_csvs_are_byte_identical_to_before(tmp_path, capsys):
    s = sample_path()
    assert main(["aggregate", str(s / "clicks.csv"), "--template", str(s / "test_pairs_ps.csv"),
                 "--out", str(tmp_path)]) == 0
    got = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in SAMPLE_SHA256}
    assert got == SAMPLE_SHA256
    report = json.loads((tmp_path / "aggregate_report.json").read_text())
    assert tuple(report) == REPORT_KEYS and report["pairs_written"] == 40


def test_counted_clicks_drops_catch_and_flagged_rows_only():
    df = _clicks([0], keypoints=[0], n=6).assign(excluded=["0", "1", " true", "True", "0", "no"],
                                                  kind=["regular"] * 4 + ["catch", "regular"])
    counted, dropped = counted_clicks(df)
    assert dropped == 4 and counted["participant"].tolist() == ["u0", "u5"]
    assert counted.index.tolist() == [0, 1]
    plain = _clicks([0], keypoints=[0])
    assert counted_clicks(plain)[1] == 0 and counted_clicks(plain)[0].equals(plain)


def test_pipeline_hand_worked():
    """Pairs 0, 1 listed; pair 1 lacks keypoint 7; pair 2 clicked but not listed, with one outlier;
    one catch click."""
    far = lambda p, k, j: (250.0, 250.0)  # noqa: E731
    clicks = pd.concat([_clicks([0, 2]), _clicks([1], keypoints=range(7)), _clicks([2], keypoints=[0], n=1, xy=far),
                        _clicks([0], keypoints=[0], n=1, xy=far).assign(kind="catch")], ignore_index=True)
    photo, sketch = [PHOTO.format(p) for p in (0, 1)], [SKETCH.format(p) for p in (0, 1)]
    gt = ground_truth_from_clicks(clicks, photo, sketch, np.full((2, 8, 2), 7.0))
    r = gt.report
    assert tuple(r) == REPORT_KEYS
    assert (r["clicks_read"], r["clicks_dropped_excluded_or_catch"], r["n_clicks"]) == (24 * 2 + 21 + 2, 1, 70)
    assert r["clicks_of_pairs_not_listed"] == 25 and r["n_rejected"] == 1
    assert (r["pairs_listed"], r["pairs_written"]) == (2, 1)
    assert r["pairs_not_written"] == [{"photo": photo[1], "sketch": sketch[1], "keypoints_missing": [7]}]
    assert gt.annotations.photo == photo[:1]
    # mean of x = k + 0, 1, 2 -> k + 1; the catch click at (250, 250) left out before the 3-sigma rule
    assert gt.annotations.photo_kps[0].tolist() == [[k + 1.0, 20.0 + k] for k in range(8)]
    assert (gt.annotations.sketch_kps == 7.0).all()
    # sigma is over the study: the unlisted pair's clicks take part (as in aggregate_clicks)
    assert r["threshold_sq_px"] == aggregate_clicks(counted_clicks(clicks)[0]).threshold
    assert r["human_agreement"]["n_clicks"] == 69 and r["outputs"] == ["test_pairs_ps.csv", "test_pairs_st.csv"]


def test_no_clicks_gives_an_empty_ground_truth_and_a_null_agreement(tmp_path):
    gt = ground_truth_from_clicks(_clicks([0]).iloc[:0], [PHOTO.format(0)], [SKETCH.format(0)], np.zeros((1, 8, 2)))
    assert gt.report["pairs_written"] == 0 and gt.report["human_agreement"] is None
    assert gt.report["pairs_not_written"][0]["keypoints_missing"] == list(range(8))
    ps, st, report = gt.write(tmp_path / "out")
    assert ps.read_text().splitlines() == [ps.read_text().splitlines()[0]]  # the header only
    assert st.read_text().startswith("source_image,target_image") and json.loads(report.read_text()) == gt.report


def test_write_round_trips(tmp_path):
    clicks = _clicks([0, 1])
    photo, sketch = [PHOTO.format(p) for p in (1, 0)], [SKETCH.format(p) for p in (1, 0)]
    gt = ground_truth_from_clicks(clicks, photo, sketch, np.arange(32.0).reshape(2, 8, 2))
    ps, st, report = gt.write(tmp_path)
    for path in (ps, st):
        back = read_annotations(path)
        assert back.photo == photo and np.array_equal(back.photo_kps, gt.annotations.photo_kps)
        assert np.array_equal(back.sketch_kps, gt.annotations.sketch_kps)
    assert report.read_text() == gt.report_json() and json.loads(gt.report_json()) == gt.report


@pytest.mark.parametrize("variant", ["template", "keypoints"])
def test_the_command_writes_what_the_function_returns(tmp_path, capsys, variant):
    s = sample_path()
    source = ["--template", str(s / "test_pairs_ps.csv")] if variant == "template" else \
        ["--keypoints", str(s / "keypoints.csv"), "--pairs", str(s / "test_pairs_ps.csv")]
    assert main(["aggregate", str(s / "clicks.csv"), *source, "--out", str(tmp_path / "cmd"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ann = read_annotations(s / "test_pairs_ps.csv")
    gt = ground_truth_from_clicks(read_clicks(s / "clicks.csv"), ann.photo, ann.sketch, ann.sketch_kps,
                                  categories=ann.categories)
    gt.write(tmp_path / "fn")
    assert printed == gt.report
    for name in ("test_pairs_ps.csv", "test_pairs_st.csv", "aggregate_report.json"):
        assert (tmp_path / "cmd" / name).read_bytes() == (tmp_path / "fn" / name).read_bytes(), name


def test_extra_keys_follow_the_pipeline_s_and_cannot_replace_them():
    clicks = _clicks([0])
    photo, sketch = [PHOTO.format(0)], [SKETCH.format(0)]
    gt = ground_truth_from_clicks(clicks, photo, sketch, np.zeros((1, 8, 2)), extra={"too_fast_clicks": 0})
    assert tuple(gt.report) == (*REPORT_KEYS, "too_fast_clicks")
    with pytest.raises(ValueError, match="pairs_written"):
        ground_truth_from_clicks(clicks, photo, sketch, np.zeros((1, 8, 2)), extra={"pairs_written": 7})
