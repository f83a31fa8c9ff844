"""psc6k compare: the paired statistics against brute force (all 2^n sign flips, naive pair
resampling, naive Holm / BH loops, scipy's BH), and the deltas against psc6k.pck.evaluate."""

import itertools
import json

import numpy as np
import pytest

from psc6k.compare import adjust_p_values, compare, sign_flip_null, sign_flip_p_value
from psc6k.pck import alpha_key, evaluate
from psc6k.submission import Submission, save_submission
from psc6k.testing import make_annotations


def brute_force_sign_flip(c):
    """Share of all 2^n sign assignments whose |sum| reaches the observed |sum|."""
    c = np.asarray(c)
    observed = abs(c.sum())
    hits = sum(abs(np.dot(signs, c)) >= observed for signs in itertools.product((1, -1), repeat=len(c)))
    return hits / 2 ** len(c)


@pytest.mark.parametrize("seed", range(8))
def test_sign_flip_p_equals_enumeration_of_all_flips(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 13))
    c = rng.integers(-16, 17, n)
    if seed == 0:
        c = np.array([3, 3, -3, 0, 5, 1])  # ties: |sum| equal to the observed one must count (>=)
    assert sign_flip_p_value(c) == pytest.approx(brute_force_sign_flip(c), abs=1e-12)


def test_sign_flip_hand_worked():
    assert sign_flip_p_value([1, 1, 1]) == pytest.approx(0.25)     # +++ and --- only
    assert sign_flip_p_value([2, 1]) == pytest.approx(0.5)         # |2+1|, |-2-1| reach 3; |2-1| does not
    assert sign_flip_p_value([0, 0, 0]) == 1.0
    assert sign_flip_p_value([4, -4]) == 1.0         # observed sum 0


def test_sign_flip_null_on_many_pairs_equals_naive_convolution():
    # 700 pairs takes the FFT path; the naive reference convolves one two-point law per pair
    rng = np.random.default_rng(3)
    c = rng.integers(-16, 17, 700)
    pmf, wmax = sign_flip_null(c)
    ref = np.ones(1)
    for k in np.abs(c):
        two = np.zeros(k + 1)
        two[0] += 0.5
        two[k] += 0.5
        ref = np.convolve(ref, two)
    assert wmax == np.abs(c).sum() and pmf.shape == ref.shape
    np.testing.assert_allclose(pmf, ref, atol=1e-13)
    # and the p-value against Monte-Carlo sign flips (binomial tolerance, 6 sigma)
    flips = rng.choice((-1, 1), size=(20000, c.size))
    mc = np.mean(np.abs(flips @ c) >= abs(c.sum()))
    p = sign_flip_p_value(c)
    assert abs(p - mc) < 6 * np.sqrt(max(p * (1 - p), 1e-4) / 20000)


def naive_holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out


def naive_bh(p):
    m = len(p)
    return [min(1.0, min(p[j] * m / (sorted(p).index(p[j]) + 1 + sum(1 for q in p if q == p[j]) - 1)
                         for j in range(m) if p[j] >= p[i])) for i in range(m)]


def test_holm_and_bh_against_naive_and_scipy():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(5)
    for _ in range(20):
        p = rng.uniform(0, 0.2, int(rng.integers(1, 12)))
        np.testing.assert_allclose(adjust_p_values(p, "holm"), naive_holm(list(p)), atol=1e-15)
        np.testing.assert_allclose(adjust_p_values(p, "bh"), false_discovery_control(p), atol=1e-12)
        np.testing.assert_allclose(adjust_p_values(p, "bh"), naive_bh(list(p)), atol=1e-12)
    # hand-worked: Holm multiplies the k-th smallest by (m - k + 1) and keeps it monotone
    assert adjust_p_values([0.01, 0.04, 0.03, 0.5], "holm").tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adjust_p_values([np.nan, 0.02], "holm")[0])
    assert adjust_p_values([np.nan, 0.02], "holm")[1] == pytest.approx(0.02)  # NaN is not counted in m


def _submissions(n=40, seed=0):
    """Keypoint submissions: A near the targets, B further off; both hit and miss at 0.05/0.10."""
    ann = make_annotations(n_pairs=n, seed=seed)
    rng = np.random.default_rng(seed + 1)

    def sub(name, spread):
        return Submission(name, "keypoints", ann.photo, ann.sketch,
                          ann.photo_kps + rng.normal(0, spread, ann.photo_kps.shape),
                          ann.sketch_kps + rng.normal(0, spread, ann.sketch_kps.shape))
    return ann, sub("A", 10.0), sub("B", 16.0)


def test_delta_equals_difference_of_evaluate_and_is_antisymmetric():
    ann, a, b = _submissions()
    cmp = compare(ann, a, b, n_bootstrap=200)
    ra, rb = evaluate(ann, a, n_bootstrap=0), evaluate(ann, b, n_bootstrap=0)
    for key in ("pck@0.05", "pck@0.10"):
        assert cmp.delta[key] == pytest.approx(ra.overall[key] - rb.overall[key], abs=1e-9)
        assert cmp.pck_a[key] == pytest.approx(ra.overall[key], abs=1e-9)
        for d in ("sketch_to_photo", "photo_to_sketch"):
            want = ra.per_direction[d][key] - rb.per_direction[d][key]
            assert cmp.per_direction[d]["delta"][key] == pytest.approx(want, abs=1e-9)
        for c, row in cmp.per_category.items():
            assert row["delta"][key] == pytest.approx(ra.per_category[c][key] - rb.per_category[c][key], abs=1e-9)
        lo, hi = cmp.ci95[key]
        assert lo <= cmp.delta[key] <= hi
    rev = compare(ann, b, a, n_bootstrap=200)
    assert rev.delta["pck@0.10"] == pytest.approx(-cmp.delta["pck@0.10"])
    assert rev.p_value == cmp.p_value
    # per-category adjusted p-values: Holm over the categories of one alpha
    raw = [row["p_value"]["pck@0.10"] for row in cmp.per_category.values()]
    adj = [row["p_adjusted"]["pck@0.10"] for row in cmp.per_category.values()]
    assert adj == pytest.approx(naive_holm(raw))


def test_p_value_is_the_sign_flip_of_per_pair_count_differences():
    ann, a, b = _submissions(n=12, seed=4)
    cmp = compare(ann, a, b, n_bootstrap=0)
    ra, rb = evaluate(ann, a, n_bootstrap=0), evaluate(ann, b, n_bootstrap=0)
    for alpha in (0.05, 0.10):
        key = alpha_key(alpha)
        # per-pair correct counts straight from the per-pair PCK of evaluate (16 keypoints a pair)
        diff = np.rint(16 * (ra.per_pair_pck[key] - rb.per_pair_pck[key])).astype(int)
        assert cmp.p_value[key] == pytest.approx(brute_force_sign_flip(diff), abs=1e-12)
    assert cmp.ci95 == {}.fromkeys(cmp.ci95, None)


def test_paired_bootstrap_ci_matches_naive_pair_resampling():
    ann, a, b = _submissions(n=60, seed=2)
    cmp = compare(ann, a, b, alphas=(0.10,), n_bootstrap=4000, seed=3)
    ra, rb = evaluate(ann, a, (0.10,), n_bootstrap=0), evaluate(ann, b, (0.10,), n_bootstrap=0)
    d = ra.per_pair_pck["pck@0.10"] - rb.per_pair_pck["pck@0.10"]
    idx = np.random.default_rng(9).integers(0, d.size, (4000, d.size))  # same pairs for A and B
    lo, hi = np.percentile(100 * d[idx].mean(axis=1), [2.5, 97.5])
    got = cmp.ci95["pck@0.10"]
    assert abs(got[0] - lo) < 1.2 and abs(got[1] - hi) < 1.2
    # an unpaired bootstrap (A and B resampled independently) would be wider on these correlated data
    assert got[1] - got[0] > 0


def test_identical_submissions_and_partial_overlap():
    ann, a, _ = _submissions(n=10)
    cmp = compare(ann, a, a, n_bootstrap=100)
    assert cmp.delta == {"pck@0.05": 0.0, "pck@0.10": 0.0}
    assert cmp.p_value == {"pck@0.05": 1.0, "pck@0.10": 1.0}
    assert cmp.ci95["pck@0.10"] == [0.0, 0.0]
    keep = list(range(4, 10))
    part = Submission("part", "keypoints", [a.photo[i] for i in keep], [a.sketch[i] for i in keep],
                      a.sketch_to_photo[keep], a.photo_to_sketch[keep])
    assert compare(ann, a, part, allow_partial=True, n_bootstrap=0).n_pairs == 6
    from psc6k.errors import SubmissionError
    with pytest.raises(SubmissionError, match="^part.npz: .*missing"):
        compare(ann, a, part, sources=("full.npz", "part.npz"))


def test_cli_json_and_errors(tmp_path, capsys):
    from psc6k.cli import main
    from psc6k.formats import write_test_pairs_ps

    ann, a, b = _submissions(n=20)
    csv = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    save_submission(a, tmp_path / "a.npz")
    save_submission(b, tmp_path / "b.json")
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.json"), "-a", str(csv), "--json",
                 "--bootstrap", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"delta", "ci95", "p_value", "per_category", "per_direction", "n_pairs"}
    assert set(out["delta"]) == {"pck@0.05", "pck@0.10"} and out["n_pairs"] == 20
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.json"), "-a", str(csv)]) == 0
    assert "delta" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "nope.npz"), "-a", str(csv)]) == 2
    err = capsys.readouterr().err
    assert "nope.npz" in err and "Traceback" not in err
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.json"), "-a", str(csv), "--alpha", "2"]) == 2
