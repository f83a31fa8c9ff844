"""Human-model consistency: slots, the distance matrix (0 on the diagonal, symmetric), methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from psc6k.consistency import click_slots, compute_consistency, consistency_matrix, method_points
from psc6k.formats import Annotations, write_clicks, write_test_pairs_ps
from psc6k.sketchy import photo_relpath, sketch_relpath
from psc6k.submission import Submission, identity_flow, save_submission


def _naive_distance(points):
    """Reference: explicit loops over systems and slots."""
    m = len(points)
    flat = [np.asarray(p, float).reshape(-1, 2) for p in points]
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(m):
            ds = [np.hypot(*(pa - pb)) for pa, pb in zip(flat[a], flat[b])
                  if np.isfinite(pa).all() and np.isfinite(pb).all()]
            if ds:
                out[a, b] = sum(ds) / len(ds) / 256.0
    return out


def test_matrix_hand_worked():
    a = np.zeros((1, 2, 2))
    b = a + [3.0, 4.0]                     # 5 px apart everywhere
    c = a.copy()
    c[0, 1] = np.nan                       # c only shares slot 0
    c[0, 0] = [0.0, 12.8]                  # 12.8 px from a, hypot(3, 8.8) from b
    dist, counts = consistency_matrix(np.stack([a, b, c]))
    assert dist[0, 1] == pytest.approx(5 / 256)
    assert dist[0, 2] == pytest.approx(12.8 / 256)
    assert dist[1, 2] == pytest.approx(np.hypot(3, 8.8) / 256)
    assert counts.tolist() == [[2, 2, 1], [2, 2, 1], [1, 1, 1]]


def test_matrix_zero_diagonal_symmetric_and_matches_naive():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 255, (5, 7, 8, 2))
    pts[rng.random((5, 7, 8)) < 0.2] = np.nan
    dist, counts = consistency_matrix(pts)
    assert np.all(np.diag(dist) == 0)
    np.testing.assert_array_equal(dist, dist.T)
    np.testing.assert_array_equal(counts, counts.T)
    np.testing.assert_allclose(dist, _naive_distance(pts), rtol=1e-12)
    # a system against itself is 0 even when it is the only one
    d1, _ = consistency_matrix(pts[:1])
    assert d1.tolist() == [[0.0]]


def _clicks_for(pairs, truth, rng, order_reversed=False):
    rows = []
    for (photo, sketch), gt in zip(pairs, truth):
        for k in range(8):
            for s in range(3):
                x, y = gt[k] + rng.normal(0, 3, 2) + (s * 10, 0)   # slot s is offset by 10 s px
                t = f"2026-01-01T00:00:{(2 - s if order_reversed else s):02d}"
                rows.append({"participant": f"p{s}", "photo": photo, "sketch": sketch, "keypoint": k,
                             "x": x, "y": y, "rt_ms": 900, "created_at": t})
    return pd.DataFrame(rows)


@pytest.fixture
def bench():
    rng = np.random.default_rng(0)
    photos = [photo_relpath("apple", f"n0_{i}") for i in range(4)]
    sketches = [sketch_relpath("apple", f"n0_{i}-1") for i in range(4)]
    sketch_kps = rng.uniform(20, 235, (4, 8, 2))
    photo_kps = np.clip(sketch_kps + [6.0, -4.0], 0, 255)
    ann = Annotations.from_arrays(photos, sketches, photo_kps, sketch_kps)
    clicks = _clicks_for(list(zip(photos, sketches)), photo_kps, rng)
    return ann, clicks


def test_click_slots_follow_created_at(bench):
    ann, clicks = bench
    pairs, pts = click_slots(clicks)
    assert pairs == list(zip(ann.photo, ann.sketch)) and pts.shape == (4, 3, 8, 2)
    # slot s sits ~10 s px right of the truth
    for s in range(3):
        assert np.mean(pts[:, s, :, 0] - ann.photo_kps[:, :, 0]) == pytest.approx(10 * s, abs=2)
    rev = clicks.iloc[::-1].reset_index(drop=True)        # file order must not matter
    pairs_rev, pts_rev = click_slots(rev)
    assert pairs_rev == pairs[::-1]
    np.testing.assert_array_equal(pts, pts_rev[::-1])
    with pytest.raises(Exception, match="annotator slots"):
        click_slots(clicks, n_slots=2)


def test_methods_and_humans(bench):
    ann, clicks = bench
    _, slots = click_slots(clicks)
    # "copycat" submits annotator 2's clicks as keypoints: consistency with annotator 2 is exactly 0
    copy = Submission("copycat", "keypoints", ann.photo, ann.sketch, slots[:, 1].copy(), ann.sketch_kps.copy())
    ident = Submission("identity", "flow", ann.photo, ann.sketch, identity_flow(4), identity_flow(4))
    res = compute_consistency(clicks, [("copycat", copy), ("identity", ident)], ann)
    assert res.names == ["annotator 1", "annotator 2", "annotator 3", "copycat", "identity"]
    i2, ic, ii = 1, 3, 4
    assert res.distance[i2, ic] == 0.0
    np.testing.assert_array_equal(res.distance, res.distance.T)
    assert np.all(np.diag(res.distance) == 0)
    # identity places a sketch keypoint at its own (rounded) position
    expected = np.round(ann.sketch_kps)
    np.testing.assert_allclose(method_points(ann, ident), expected, atol=1e-9)
    d_id_a1 = np.linalg.norm(expected - slots[:, 0], axis=-1).mean() / 256
    assert res.distance[ii, 0] == pytest.approx(d_id_a1)
    # human agreement comes from psc6k.aggregate and is high for 3-px noise with 10-px offsets
    assert res.human_agreement["pck@0.10"] == pytest.approx(100.0)
    assert res.counts[0, ii] == 32


def test_partial_submission_and_unmatched_pairs(bench):
    ann, clicks = bench
    ident = Submission("identity", "flow", ann.photo[:2], ann.sketch[:2], identity_flow(2), identity_flow(2))
    res = compute_consistency(clicks, [("identity", ident)], ann)
    assert res.counts[0, 3] == 16                       # only the 2 covered pairs
    from psc6k.errors import Psc6kError
    with pytest.raises(Psc6kError, match="need `annotations`"):
        compute_consistency(clicks, [("identity", ident)], None)
    other = clicks.assign(photo=clicks["photo"] + "x")
    with pytest.raises(Psc6kError, match="none of the clicked pairs"):
        compute_consistency(other, [("identity", ident)], ann)


def test_cli_writes_csv_json_png(bench, tmp_path, capsys):
    from psc6k.cli import main
    ann, clicks = bench
    write_clicks(clicks, tmp_path / "clicks.csv")
    write_test_pairs_ps(ann, tmp_path / "test_pairs_ps.csv")
    save_submission(Submission("identity", "flow", ann.photo, ann.sketch, identity_flow(4), identity_flow(4)),
                    tmp_path / "id.npz")
    out = tmp_path / "cons"
    assert main(["consistency", "--clicks", str(tmp_path / "clicks.csv"), "--annotations",
                 str(tmp_path / "test_pairs_ps.csv"), str(tmp_path / "id.npz"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "annotator 1" in text and "human agreement" in text
    table = pd.read_csv(out / "consistency.csv", index_col=0)
    assert list(table.columns) == ["annotator 1", "annotator 2", "annotator 3", "identity"]
    np.testing.assert_allclose(table.to_numpy(), table.to_numpy().T)
    assert (out / "consistency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # submissions without annotations: a clear error, exit 2
    assert main(["consistency", "--clicks", str(tmp_path / "clicks.csv"), str(tmp_path / "id.npz"),
                 "--out", str(out)]) == 2
    assert "--annotations is required" in capsys.readouterr().err
