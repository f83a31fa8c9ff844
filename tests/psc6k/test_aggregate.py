"""psc6k.aggregate and `psc6k aggregate`: the 3-sigma rule of SPEC §4 (A.2) on hand-worked clicks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psc6k.aggregate import aggregate_clicks, human_agreement, leave_one_out_distances
from psc6k.cli import main
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, write_clicks, write_keypoints_csv

PHOTO = "rendered_256x256/256x256/photo/tx_000100000000/airplane/n1_{}.jpg"
SKETCH = "rendered_256x256/256x256/sketch/tx_000100000000/airplane/n1_{}-1.png"


def clicks_frame(groups):
    """groups: list of (pair_no, keypoint, [(x, y), ...]) -> a clicks DataFrame."""
    rows = []
    for pair, k, pts in groups:
        for j, (x, y) in enumerate(pts):
            rows.append({"participant": f"u{j}", "photo": PHOTO.format(pair), "sketch": SKETCH.format(pair),
                         "keypoint": k, "x": float(x), "y": float(y), "rt_ms": 1000.0,
                         "created_at": "2026-01-01T00:00:00Z"})
    return pd.DataFrame(rows)


def naive_aggregate(df, n_sigma=3.0):
    """Reference: the rule of SPEC §4 with plain loops."""
    keys = list(zip(df.photo, df.sketch, df.keypoint))
    groups = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    d = [0.0] * len(df)
    for key, idx in groups.items():
        mx = float(np.median([df.x[i] for i in idx]))
        my = float(np.median([df.y[i] for i in idx]))
        for i in idx:
            d[i] = (df.x[i] - mx) ** 2 + (df.y[i] - my) ** 2
    mu = sum(d) / len(d)
    sigma = math.sqrt(sum((v - mu) ** 2 for v in d) / len(d))
    kept = [v <= mu + n_sigma * sigma for v in d]
    gt = {}
    for key, idx in groups.items():
        ks = [i for i in idx if kept[i]]
        gt[key] = (sum(df.x[i] for i in ks) / len(ks), sum(df.y[i] for i in ks) / len(ks)) if ks else (None, None)
    return kept, gt, mu, sigma


def test_hand_worked_outlier_rejected():
    # 9 keypoints with clicks (0,0),(0,0),(1,0): median (0,0), d = 0, 0, 1.
    # 1 keypoint with (0,0),(0,0),(30,40): d = 0, 0, 2500.
    # 30 values: mu = 2509/30 = 83.633; E[d^2] = 6250009/30; sigma = 448.708; mu+3sigma = 1429.758 < 2500.
    groups = [(p, 0, [(0, 0), (0, 0), (1, 0)]) for p in range(9)] + [(9, 0, [(0, 0), (0, 0), (30, 40)])]
    agg = aggregate_clicks(clicks_frame(groups))
    assert agg.mu == pytest.approx(2509 / 30)
    assert agg.sigma == pytest.approx(math.sqrt(6250009 / 30 - (2509 / 30) ** 2))
    assert agg.threshold == pytest.approx(1429.758, abs=0.001)
    assert agg.n_rejected == 1 and agg.rejected_fraction == pytest.approx(1 / 30)
    assert not agg.kept[29] and agg.kept[:29].all()
    kp = agg.keypoints.set_index("photo")
    assert kp.loc[PHOTO.format(9), ["x", "y", "n_kept", "n_clicks"]].tolist() == [0, 0, 2, 3]
    assert kp.loc[PHOTO.format(0), "x"] == pytest.approx(1 / 3)
    assert len(agg.keypoints_with_fewer_than(2)) == 0


def test_threshold_is_strict():
    # One click at d = D, nine at d = 0: mu = D/10, sigma = 3D/10, mu + 3 sigma = D exactly -> kept.
    base = [(0, 0, [(0, 0), (0, 0), (10, 0)]), (1, 0, [(5, 5)] * 3), (2, 0, [(7, 7)] * 3), (3, 0, [(1, 1)])]
    agg = aggregate_clicks(clicks_frame(base))
    assert agg.n_clicks == 10 and agg.threshold == 100.0 and agg.sq_dist.max() == 100.0
    assert agg.n_rejected == 0  # d == mu + 3 sigma is not an outlier ('>' is strict)
    # One more zero-distance click: mu + 3 sigma = D (1 + 3 sqrt(10)) / 11 < D -> rejected.
    agg = aggregate_clicks(clicks_frame(base + [(4, 0, [(3, 3)])]))
    assert agg.n_rejected == 1
    assert agg.keypoints.iloc[0][["x", "y", "n_kept"]].tolist() == [0, 0, 2]


def test_sigma_is_over_the_whole_study_not_per_keypoint():
    # The same wide keypoint is an outlier among tight keypoints but not alone.
    wide = (0, 0, [(0, 0), (0, 0), (60, 0)])
    alone = aggregate_clicks(clicks_frame([wide]))
    assert alone.n_rejected == 0  # d = 0, 0, 3600: mu + 3 sigma = 1200 + 3 * 1697 > 3600
    crowd = aggregate_clicks(clicks_frame([wide] + [(p, 1, [(0, 0)] * 3) for p in range(1, 10)]))
    assert crowd.n_rejected == 1


def test_all_clicks_rejected_leaves_nan_and_is_reported():
    # Two clicks: median is their mean; both at the same distance. With many tight keypoints both go.
    groups = [(0, 0, [(0, 0), (100, 0)])] + [(p, 0, [(0, 0)] * 3) for p in range(1, 40)]
    agg = aggregate_clicks(clicks_frame(groups))
    row = agg.keypoints[agg.keypoints.photo == PHOTO.format(0)].iloc[0]
    assert row.n_kept == 0 and np.isnan(row.x)
    assert agg.summary()["keypoints_without_kept_click"] == 1
    kps = agg.photo_keypoints([PHOTO.format(0), PHOTO.format(1)], [SKETCH.format(0), SKETCH.format(1)])
    assert np.isnan(kps[0, 0]).all() and np.isnan(kps[0, 1:]).all() and (kps[1, 0] == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=4),
                min_size=1, max_size=12))
def test_matches_naive_reference(points):
    df = clicks_frame([(i, i % 8, pts) for i, pts in enumerate(points)])
    agg = aggregate_clicks(df)
    kept, gt, mu, sigma = naive_aggregate(df)
    assert agg.kept.tolist() == kept
    assert agg.mu == pytest.approx(mu) and agg.sigma == pytest.approx(sigma, abs=1e-9)
    for row in agg.keypoints.itertuples():
        ex, ey = gt[(row.photo, row.sketch, row.keypoint)]
        if ex is None:
            assert np.isnan(row.x)
        else:
            assert row.x == pytest.approx(ex) and row.y == pytest.approx(ey)


def test_human_agreement_hand_worked():
    # (0,0), (10,0), (20,0): leave-one-out centroids (15,0), (10,0), (5,0) -> distances 15, 0, 15.
    df = clicks_frame([(0, 0, [(0, 0), (10, 0), (20, 0)]), (1, 0, [(50, 50)])])
    assert leave_one_out_distances(df)[:3].tolist() == [15, 0, 15]
    assert np.isnan(leave_one_out_distances(df)[3])  # alone: nothing to compare with
    ha = human_agreement(df)
    assert ha["pck@0.05"] == pytest.approx(100 / 3)  # 12.8 px: only the middle click
    assert ha["pck@0.10"] == 100.0                   # 25.6 px: all three
    assert ha["mean_error_px"] == 10 and ha["mean_error_norm"] == 10 / 256
    assert ha["n_clicks"] == 3 and ha["n_keypoints"] == 1
    # restricted to kept clicks: dropping (20,0) leaves (0,0) vs (10,0): 10 px each
    ha = human_agreement(df, kept=np.array([True, True, False, True]))
    assert ha["mean_error_px"] == 10 and ha["n_clicks"] == 2 and ha["pck@0.05"] == 100.0


def test_bad_clicks_name_the_problem():
    df = clicks_frame([(0, 0, [(0, 0)])])
    with pytest.raises(Psc6kError, match="column"):
        aggregate_clicks(df.drop(columns=["x"]))
    bad = df.copy()
    bad.loc[0, "x"] = float("nan")
    with pytest.raises(Psc6kError, match="non-finite"):
        aggregate_clicks(bad)


def test_cli_writes_psc6k_csvs(tmp_path, capsys):
    groups = [(p, k, [(10 + k, 20), (11 + k, 20), (12 + k, 20)]) for p in range(3) for k in range(8)]
    groups[0] = (0, 0, [(10, 20), (11, 20), (200, 200)])  # an outlier
    df = clicks_frame(groups)
    # one pair left with a keypoint missing (no click at all on keypoint 7 of pair 3)
    extra = clicks_frame([(3, k, [(5, 5)] * 3) for k in range(7)])
    df = pd.concat([df, extra], ignore_index=True)
    clicks_csv = tmp_path / "clicks.csv"
    write_clicks(df, clicks_csv)
    kps = {SKETCH.format(p): np.full((8, 2), 100.0 + p) for p in range(4)}
    write_keypoints_csv(kps, tmp_path / "keypoints.csv")
    rc = main(["aggregate", str(clicks_csv), "--keypoints", str(tmp_path / "keypoints.csv"),
               "--out", str(tmp_path / "gt"), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_rejected"] == 1 and report["pairs_written"] == 3
    assert report["pairs_not_written"][0]["keypoints_missing"] == [7]
    ann = read_annotations(tmp_path / "gt" / "test_pairs_ps.csv")
    assert ann.photo == [PHOTO.format(p) for p in range(3)]
    assert ann.photo_kps[0, 0].tolist() == [10.5, 20.0]        # outlier left out of the mean
    assert ann.photo_kps[1, 3].tolist() == [14.0, 20.0]        # mean of 13, 14, 15
    assert (ann.sketch_kps[2] == 102.0).all() and (ann.cls == 1).all()
    st_ann = read_annotations(tmp_path / "gt" / "test_pairs_st.csv")
    assert np.array_equal(st_ann.photo_kps, ann.photo_kps)


def test_cli_errors_exit_2(tmp_path, capsys):
    df = clicks_frame([(0, 0, [(1, 1)])])
    write_clicks(df, tmp_path / "clicks.csv")
    write_keypoints_csv({"other.png": np.zeros((8, 2))}, tmp_path / "kp.csv")
    rc = main(["aggregate", str(tmp_path / "clicks.csv"), "--keypoints", str(tmp_path / "kp.csv"),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no keypoints for sketch" in capsys.readouterr().err


def test_cli_template_and_pairs_order(tmp_path, capsys):
    from psc6k.formats import Annotations, write_pair_list, write_test_pairs_ps, TrainPairs

    groups = [(p, k, [(20.0 + p, 30.0 + k)] * 3) for p in range(2) for k in range(8)]
    df = clicks_frame(groups)
    df["excluded"] = 0
    # an excluded click (a flagged participant) far away: dropped before aggregation
    bad = clicks_frame([(0, 0, [(250.0, 250.0)])]).assign(excluded=1)
    write_clicks(pd.concat([df, bad], ignore_index=True), tmp_path / "clicks.csv")
    photos, sketches = [PHOTO.format(p) for p in (1, 0)], [SKETCH.format(p) for p in (1, 0)]
    sketch_kps = np.stack([np.full((8, 2), 7.0), np.full((8, 2), 9.0)])
    write_test_pairs_ps(Annotations.from_arrays(photos, sketches, np.zeros((2, 8, 2)), sketch_kps),
                        tmp_path / "template.csv")
    rc = main(["aggregate", str(tmp_path / "clicks.csv"), "--template", str(tmp_path / "template.csv"),
               "--out", str(tmp_path / "gt"), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clicks_dropped_excluded_or_catch"] == 1 and report["n_rejected"] == 0
    ann = read_annotations(tmp_path / "gt" / "test_pairs_ps.csv")
    assert ann.photo == photos  # the template's order
    assert ann.photo_kps[0, 3].tolist() == [21.0, 33.0] and (ann.sketch_kps[0] == 7.0).all()
    # --pairs sets the order instead
    write_pair_list(TrainPairs.from_paths(photos[::-1], sketches[::-1]), tmp_path / "pairs.csv")
    assert main(["aggregate", str(tmp_path / "clicks.csv"), "--template", str(tmp_path / "template.csv"),
                 "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "gt2")]) == 0
    assert "rejected as outliers" in capsys.readouterr().out
    assert read_annotations(tmp_path / "gt2" / "test_pairs_ps.csv").photo == photos[::-1]
