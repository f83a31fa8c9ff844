"""Paired comparison of two methods on the same pairs: is A really better than B?

Both submissions are scored by :func:`psc6k.pck.evaluate` (the one scorer); the comparison then
works on the per-pair numbers of correct keypoints, because pairs — not keypoints — are the
independent units (the 16 keypoints of a pair share one image pair and one flow).

For a pair ``i`` with ``K`` scored keypoints (16 over both directions, 8 per direction), let
``d_i = (correct_A_i - correct_B_i) / K``. Then

- ``delta = 100 * mean(d)`` is exactly ``PCK_A - PCK_B`` in percentage points (every pair has
  the same ``K``, so the mean over pairs equals the pooled PCK difference);
- ``ci95``: the percentile bootstrap of ``delta`` resampling *pairs* (the same pairs for both
  methods: a paired bootstrap), through :func:`psc6k.pck.bootstrap_ci`;
- ``p_value``: the two-sided **exact** paired sign-flip (randomisation) test of "A and B are
  exchangeable within each pair": under that null each ``d_i`` is ``+d_i`` or ``-d_i`` with
  probability 1/2, and the p-value is the share of all ``2**n`` sign assignments whose
  ``|sum d|`` is at least the observed one. It is computed without enumerating: ``K * d_i`` are
  integers, so the null distribution of the sum is a convolution of scaled binomials (one per
  distinct ``|K d_i|``), see :func:`sign_flip_p_value`. No seed, no Monte-Carlo error.
- ``per_category``: the same per category, with the p-values adjusted for the number of
  categories (per alpha) by Holm's step-down method (family-wise error rate; the default) or by
  Benjamini–Hochberg (false discovery rate).
- **small samples**: with ``n`` pairs the exact test can never give a p below
  ``min_attainable_p(n) = 2 / 2**n`` (every pair favouring the same method); at 4 pairs per
  category that is 0.125, so no per-category difference can be significant at 0.05, and each
  category says so (``min_attainable_p``, ``can_reach_significance``).
- **verdicts**: :func:`verdict` calls a method better only when the p-value is below 0.05 *and*
  the 95% CI excludes zero; anything else is "no significant difference".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.errors import Psc6kError, SubmissionError
from psc6k.pck import DEFAULT_ALPHAS, alpha_key, bootstrap_ci, evaluate, pck_correct
from psc6k.submission import DIRECTIONS

CORRECTIONS = ("holm", "bh")
#: Significance level of the verdicts and of ``can_reach_significance``.
SIGNIFICANCE = 0.05


# --------------------------------------------------------------------------- statistics
def _int_differences(diff_counts) -> np.ndarray:
    d = np.asarray(diff_counts)
    if d.dtype.kind == "f":
        r = np.rint(d)
        if not np.allclose(d, r, rtol=0, atol=1e-9):
            raise ValueError("sign_flip_p_value needs integer per-pair differences (counts of correct keypoints)")
        d = r
    return np.abs(d.astype(np.int64).ravel())


def sign_flip_null(diff_counts) -> tuple[np.ndarray, int]:
    """Exact null distribution of ``W = sum_i |c_i| * b_i``, ``b_i`` iid Bernoulli(1/2).

    With ``s_i = 1 - 2 b_i`` the sign-flipped sum is ``sum_i s_i |c_i| = Wmax - 2 W``.

    Parameters
    ----------
    diff_counts : array of int, shape (n,)
        Per-pair differences of correct-keypoint counts ``c_i`` (any sign).

    Returns
    -------
    pmf : ndarray of float64, shape (Wmax + 1,)
        ``pmf[w] = P(W = w)``.
    wmax : int
        ``sum |c_i|``.
    """
    from scipy.signal import fftconvolve
    from scipy.stats import binom

    c = _int_differences(diff_counts)
    ks, counts = np.unique(c[c > 0], return_counts=True)
    pmf = np.ones(1)
    for k, m in zip(ks.tolist(), counts.tolist()):
        # k * Binomial(m, 1/2): mass binom.pmf(j) at k * j
        part = np.zeros(k * m + 1)
        part[::k] = binom.pmf(np.arange(m + 1), m, 0.5)
        if pmf.size * part.size <= 4_000_000:
            pmf = np.convolve(pmf, part)
        else:  # long supports (thousands of pairs): FFT; absolute error ~1e-15
            pmf = np.clip(fftconvolve(pmf, part), 0.0, None)
    return pmf, int(c.sum())


def sign_flip_p_value(diff_counts) -> float:
    """Two-sided exact paired sign-flip p-value of ``sum(diff_counts)``.

    ``p = P(|sum_i s_i c_i| >= |sum_i c_i|)`` over independent fair signs ``s_i`` — the share of
    all ``2**n`` sign assignments, counted exactly (pairs with ``c_i = 0`` do not matter).

    Examples
    --------
    >>> sign_flip_p_value([1, 1, 1])   # only +++ and --- reach |3|: 2 of 8
    0.25
    >>> sign_flip_p_value([0, 0])
    1.0
    """
    c = _int_differences(diff_counts)
    observed = abs(int(np.sum(np.asarray(diff_counts, dtype=np.float64).round())))
    if observed == 0:
        return 1.0
    pmf, wmax = sign_flip_null(c)
    # |Wmax - 2W| >= observed  <=>  W <= (Wmax - observed) / 2  or  W >= (Wmax + observed) / 2
    low = (wmax - observed) // 2
    high = -(-(wmax + observed) // 2)
    p = pmf[: low + 1].sum() + pmf[high:].sum()
    return float(min(1.0, max(p, 0.0)))


def min_attainable_p(n_pairs: int) -> float:
    """Smallest two-sided p-value the exact sign-flip test can give with ``n_pairs`` pairs: ``2 / 2**n``.

    Reached when every pair differs in the same direction by the same amount: only the all-plus
    and all-minus sign assignments reach the observed ``|sum|`` (tests check it against
    :func:`sign_flip_p_value` over every difference pattern).

    Examples
    --------
    >>> min_attainable_p(4), min_attainable_p(6)
    (0.125, 0.03125)
    """
    return min(1.0, 2.0 ** (1 - int(n_pairs))) if n_pairs > 0 else 1.0


def verdict(delta: float, ci95, p_value: float, a: str = "A", b: str = "B", level: float = SIGNIFICANCE) -> str:
    """``"A better"`` / ``"B better"`` only when ``p < level`` and the CI excludes zero, else
    ``"no significant difference"`` (a difference whose CI overlaps zero is never "better").

    Examples
    --------
    >>> verdict(3.0, [0.5, 5.5], 0.01), verdict(3.0, [-0.5, 6.5], 0.01), verdict(-2.0, None, 0.001)
    ('A better', 'no significant difference', 'B better')
    """
    if p_value is None or not np.isfinite(p_value) or p_value >= level or not np.isfinite(delta) or delta == 0:
        return "no significant difference"
    if ci95 is not None and ci95[0] <= 0 <= ci95[1]:
        return "no significant difference"
    return f"{a} better" if delta > 0 else f"{b} better"


def adjust_p_values(p_values, method: str = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values (NaN entries are left out and stay NaN).

    ``holm``: Holm's step-down Bonferroni, controls the family-wise error rate;
    ``bh``: Benjamini–Hochberg step-up, controls the false discovery rate.

    Examples
    --------
    >>> adjust_p_values([0.01, 0.04, 0.03], "holm").round(4).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_p_values([0.01, 0.04, 0.03], "bh").round(4).tolist()
    [0.03, 0.04, 0.04]
    """
    if method not in CORRECTIONS:
        raise Psc6kError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ps)
    else:
        adj = np.minimum.accumulate((ps * m / np.arange(1, m + 1))[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """Paired comparison of method ``a`` against method ``b`` (``delta`` = a - b, in points).

    ``delta``, ``ci95``, ``p_value``, ``pck_a``, ``pck_b`` map ``alpha_key(alpha)`` to numbers;
    ``per_direction[direction]`` and ``per_category[category]`` hold the same keys (plus
    ``n_pairs`` and, per category, ``p_adjusted``, ``min_attainable_p``, ``can_reach_significance``);
    ``verdict`` maps each alpha key to :func:`verdict` of the overall difference.
    """

    a: str
    b: str
    alphas: tuple
    n_pairs: int
    pck_a: dict
    pck_b: dict
    delta: dict
    ci95: dict
    p_value: dict
    per_direction: dict
    per_category: dict
    correction: str
    protocol: dict = field(default_factory=dict)
    verdict: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "n_pairs": self.n_pairs, "pck_a": self.pck_a, "pck_b": self.pck_b,
                "delta": self.delta, "ci95": self.ci95, "p_value": self.p_value, "verdict": self.verdict,
                "per_direction": self.per_direction, "per_category": self.per_category,
                "correction": self.correction, "protocol": self.protocol, "provenance": self.provenance}


def correct_counts(ann, result, alpha: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Correct keypoints per scored pair and direction, int ``[n_pairs, 2]`` (order of DIRECTIONS).

    Uses the predictions an :class:`psc6k.pck.EvalResult` kept and :func:`psc6k.pck.pck_correct`.
    """
    idx = result.ann_index
    targets = {"sketch_to_photo": ann.photo_kps[idx], "photo_to_sketch": ann.sketch_kps[idx]}
    return np.stack([pck_correct(result.pred[d], targets[d], alpha, size, strict=result.strict).sum(axis=-1)
                     for d in DIRECTIONS], axis=1).astype(np.int64)


def _paired(diff_counts, k: int, n_bootstrap: int, seed: int) -> dict:
    """delta (points), bootstrap CI and exact p-value from per-pair count differences."""
    d = np.asarray(diff_counts, dtype=np.float64) / k
    ci = bootstrap_ci(d, n_bootstrap, seed) if n_bootstrap > 0 and d.size else None
    return {"delta": float(100.0 * d.mean()) if d.size else float("nan"), "ci95": ci,
            "p_value": sign_flip_p_value(diff_counts) if d.size else float("nan")}


def compare_results(ann, res_a, res_b, *, alphas=None, n_bootstrap: int = 1000, seed: int = 0,
                    correction: str = "holm", size: int = IMAGE_SIZE) -> Comparison:
    """Compare two :class:`psc6k.pck.EvalResult` of the same annotations on their common pairs.

    Parameters
    ----------
    ann : psc6k.formats.Annotations
        The annotations both results were scored against.
    res_a, res_b : psc6k.pck.EvalResult
    alphas : sequence of float, optional
        Default: the alphas of ``res_a``.
    n_bootstrap : int
        Paired bootstrap resamples of pairs (0: no CI).
    correction : {"holm", "bh"}
        Adjustment of the per-category p-values (over categories, per alpha).

    Returns
    -------
    Comparison

    Raises
    ------
    Psc6kError
        When the two results were scored under different protocols (their numbers do not compare).
    """
    if correction not in CORRECTIONS:
        raise Psc6kError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    proto_a, proto_b = (r.provenance.get("protocol_sha256") for r in (res_a, res_b))
    if proto_a != proto_b or res_a.strict != res_b.strict:
        raise Psc6kError(f"{res_a.method!r} was scored under protocol {res_a.provenance.get('protocol')!r} and "
                         f"{res_b.method!r} under {res_b.provenance.get('protocol')!r}: numbers of two protocols "
                         "do not compare")
    alphas = tuple(float(a) for a in (res_a.alphas if alphas is None else alphas))
    common, ia, ib = np.intersect1d(res_a.ann_index, res_b.ann_index, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise Psc6kError(f"{res_a.method!r} and {res_b.method!r} share no scored pair")
    n = int(common.size)
    categories = np.array([ann.category[i] for i in common])
    cat_names = sorted(set(categories.tolist()), key=list(ann.categories).index)
    out = dict(pck_a={}, pck_b={}, delta={}, ci95={}, p_value={})
    per_direction = {d: {"n_pairs": n, "delta": {}, "ci95": {}, "p_value": {}} for d in DIRECTIONS}
    per_category = {}
    for c in cat_names:
        n_c = int((categories == c).sum())
        per_category[c] = {"n_pairs": n_c, "delta": {}, "ci95": {}, "p_value": {}, "p_adjusted": {},
                           "min_attainable_p": min_attainable_p(n_c),
                           "can_reach_significance": min_attainable_p(n_c) < SIGNIFICANCE}
    for a in alphas:
        key = alpha_key(a)
        ca = correct_counts(ann, res_a, a, size)[ia]  # (n, 2)
        cb = correct_counts(ann, res_b, a, size)[ib]
        k_dir = res_a.pred[DIRECTIONS[0]].shape[1]
        diff = (ca - cb).sum(axis=1)
        overall = _paired(diff, 2 * k_dir, n_bootstrap, seed)
        out["pck_a"][key] = float(100.0 * ca.sum() / (n * 2 * k_dir))
        out["pck_b"][key] = float(100.0 * cb.sum() / (n * 2 * k_dir))
        for name in ("delta", "ci95", "p_value"):
            out[name][key] = overall[name]
        for j, d in enumerate(DIRECTIONS):
            stats = _paired(ca[:, j] - cb[:, j], k_dir, n_bootstrap, seed)
            for name in ("delta", "ci95", "p_value"):
                per_direction[d][name][key] = stats[name]
        raw = []
        for c in cat_names:
            stats = _paired(diff[categories == c], 2 * k_dir, n_bootstrap, seed)
            for name in ("delta", "ci95", "p_value"):
                per_category[c][name][key] = stats[name]
            raw.append(stats["p_value"])
        for c, adj in zip(cat_names, adjust_p_values(raw, correction)):
            per_category[c]["p_adjusted"][key] = float(adj)
    protocol = {
        "unit": "pair (both methods on the same pairs)", "delta": "PCK_a - PCK_b, percentage points",
        "ci95": f"paired percentile bootstrap over pairs, {n_bootstrap} resamples, seed {seed}"
                if n_bootstrap else "off",
        "p_value": "two-sided exact paired sign-flip test of the per-pair difference (all 2^n flips)",
        "per_category_correction": {"holm": "Holm step-down (family-wise error), over categories per alpha",
                                    "bh": "Benjamini-Hochberg (false discovery rate), over categories per alpha"
                                    }[correction],
        "pck": res_a.protocol.get("pooling", ""), "threshold_basis": res_a.protocol.get("threshold_basis"),
        "name": res_a.protocol.get("name"), "sha256": res_a.protocol.get("sha256"),
        "comparison": res_a.protocol.get("comparison"),
        "verdict": f"'A better' / 'B better' only when p < {SIGNIFICANCE} and the 95% CI excludes 0",
    }
    verdicts = {key: verdict(out["delta"][key], out["ci95"][key], out["p_value"][key], res_a.method, res_b.method)
                for key in out["delta"]}
    return Comparison(res_a.method, res_b.method, alphas, n, per_direction=per_direction,
                      per_category=per_category, correction=correction, protocol=protocol, verdict=verdicts,
                      provenance=dict(res_a.provenance), **out)


def compare(ann, sub_a, sub_b, alphas=DEFAULT_ALPHAS, *, allow_partial: bool = False, n_bootstrap: int = 1000,
            seed: int = 0, correction: str = "holm", sources=("A", "B"), protocol="psc6k") -> Comparison:
    """Score two submissions (:func:`psc6k.pck.evaluate`, under one ``protocol``) and compare them pair by pair.

    With ``allow_partial`` each may cover only some pairs; the comparison uses the pairs both cover.
    ``sources`` name the two in error messages (e.g. their file names).
    """
    results = []
    for sub, source in zip((sub_a, sub_b), sources):
        try:
            results.append(evaluate(ann, sub, alphas, allow_partial=allow_partial, n_bootstrap=0, protocol=protocol))
        except SubmissionError as exc:
            if exc.source is not None:
                raise
            raise SubmissionError(exc.reason, pair=exc.pair, field=exc.field, source=source) from None
    res_a, res_b = results
    return compare_results(ann, res_a, res_b, alphas=alphas, n_bootstrap=n_bootstrap, seed=seed,
                           correction=correction)


def format_comparison(cmp: Comparison, categories: bool = True) -> str:
    """Plain-text table of a comparison."""
    keys = [alpha_key(a) for a in cmp.alphas]

    def cell(delta, ci, p):
        ci_txt = f"[{ci[0]:+6.2f}, {ci[1]:+6.2f}]" if ci else ""
        return f"{delta:+7.2f} {ci_txt:>18} p={_fmt_p(p)}"

    lines = [f"A = {cmp.a}", f"B = {cmp.b}", f"{cmp.n_pairs} common pairs; delta = A - B in PCK points, "
             "95% paired-bootstrap CI, exact sign-flip p", ""]
    lines.append(f"{'':<22}" + "".join(f"{k:>40}" for k in keys))
    lines.append(f"{'PCK A':<22}" + "".join(f"{cmp.pck_a[k]:>40.2f}" for k in keys))
    lines.append(f"{'PCK B':<22}" + "".join(f"{cmp.pck_b[k]:>40.2f}" for k in keys))
    lines.append(f"{'delta (both dirs)':<22}" + "".join(f"{cell(cmp.delta[k], cmp.ci95[k], cmp.p_value[k]):>40}"
                                                         for k in keys))
    for d, vals in cmp.per_direction.items():
        lines.append(f"{d:<22}" + "".join(f"{cell(vals['delta'][k], vals['ci95'][k], vals['p_value'][k]):>40}"
                                          for k in keys))
    lines.append(f"{'verdict':<22}" + "".join(f"{cmp.verdict.get(k, ''):>40}" for k in keys))
    if categories and cmp.per_category:
        lines += ["", f"per category (p adjusted: {cmp.correction})"]
        for c, vals in cmp.per_category.items():
            row = "".join(f"{cell(vals['delta'][k], vals['ci95'][k], vals['p_adjusted'][k]):>40}" for k in keys)
            lines.append(f"{c[:16] + ' (' + str(vals['n_pairs']) + ')':<22}{row}")
        note = small_sample_note(cmp.per_category)
        if note:
            lines += ["", note]
    lines += ["", f"protocol {cmp.protocol.get('name')} ({cmp.protocol.get('comparison')}); "
              f"annotations sha256 {cmp.provenance.get('annotations_sha256')}; {cmp.provenance.get('scorer_version')}"]
    return "\n".join(lines)


def small_sample_note(per_category: dict, level: float = SIGNIFICANCE) -> str:
    """One sentence naming the categories whose exact test cannot reach ``p < level`` at all
    (before any multiple-comparison adjustment), with the smallest attainable p; "" when none."""
    weak = {c: v for c, v in per_category.items() if not v["min_attainable_p"] < level}
    if not weak:
        return ""
    sizes = sorted({v["n_pairs"] for v in weak.values()})
    smallest = ", ".join(f"{n} pairs: p >= {min_attainable_p(n):.3g}" for n in sizes)
    return (f"{len(weak)} of {len(per_category)} categories have too few pairs for the exact sign-flip test to "
            f"ever reach p < {level} ({smallest}); their differences cannot be called significant.")


def _fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "  –  "
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"
