"""A static HTML report of one or more submissions, readable offline.

``write_report`` scores every submission with :func:`psc6k.pck.evaluate` (the one scorer) and
writes into one folder, with only relative links to files it wrote itself:

- ``index.html``: the leaderboard (PCK@0.05 / PCK@0.10 with bootstrap 95% CIs, per direction,
  mean error), the figures below, and the protocol;
- ``pck_curve.png``: PCK against alpha from 0.01 to 0.20;
- ``per_category.png``: PCK@0.10 per category and method;
- ``examples/pair_XX.png``: example pairs with ground-truth and predicted keypoints and the
  correspondence lines sketch -> photo (like paper Fig. 1 and 9);
- ``failures/<method>.png``: the failure gallery, the worst pairs of each method (lowest
  per-pair PCK@0.10, then largest mean error): sketch, photo, and for flow submissions the photo
  warped onto the sketch through the sketch->photo flow, with the sketch strokes drawn over it;
- ``consistency.png`` / ``.csv`` / ``.json``: human-model consistency (paper Fig. 5), when clicks
  are given;
- ``results.json``: every score, as ``psc6k eval --json`` prints it (per-keypoint PCK included),
  ``pairwise``: every pair of methods compared on the same pairs
  (:func:`psc6k.compare.compare_results`: delta PCK, paired bootstrap CI, exact sign-flip p-value,
  a verdict that never calls a non-significant difference better, and whether a per-category test
  can reach significance at all), and ``provenance``: protocol and the hash of its definition,
  the annotation file and its SHA-256, command line, date, psc6k and scorer versions — also shown
  on the page.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.compare import SIGNIFICANCE, compare_results, verdict
from psc6k.consistency import compute_consistency, write_consistency
from psc6k.dense import upsample_flows_px
from psc6k.errors import Psc6kError
from psc6k.images import read_image
from psc6k.pck import alpha_key, evaluate, provenance

#: alphas of the PCK curve
CURVE_ALPHAS: tuple[float, ...] = tuple(round(a, 2) for a in np.arange(1, 21) / 100.0)
#: the two alphas of the leaderboard (SPEC §1)
MAIN_ALPHAS = (0.05, 0.10)
#: distinct colours for the 8 keypoints
KEYPOINT_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


@dataclass
class MethodScores:
    """Scores of one submission: the leaderboard evaluation and the curve evaluation."""

    name: str
    submission: object
    main: object   # psc6k.pck.EvalResult at MAIN_ALPHAS with CIs
    curve: object  # psc6k.pck.EvalResult at CURVE_ALPHAS, no bootstrap


def score_submissions(ann, submissions, *, allow_partial: bool = False, n_bootstrap: int = 1000,
                      seed: int = 0, protocol: str = "psc6k") -> list[MethodScores]:
    """Evaluate each submission (``psc6k.pck.evaluate`` under ``protocol``), ranked by PCK@0.10 then PCK@0.05.

    Method names are made unique (``name``, ``name (2)``, ...). A method whose scores are not
    finite is never ranked above one whose scores are.
    """
    out, seen = [], {}
    for sub in submissions:
        name = sub.method or "unnamed"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} ({seen[name]})"
        main = evaluate(ann, sub, MAIN_ALPHAS, allow_partial=allow_partial, n_bootstrap=n_bootstrap, seed=seed,
                        protocol=protocol)
        curve = evaluate(ann, sub, CURVE_ALPHAS, allow_partial=allow_partial, n_bootstrap=0, protocol=protocol)
        out.append(MethodScores(name, sub, main, curve))

    k10, k05 = alpha_key(0.10), alpha_key(0.05)

    def rank_key(m):
        a, b = m.main.overall[k10], m.main.overall[k05]
        finite = np.isfinite(a) and np.isfinite(b)
        return (0 if finite else 1, -(a if finite else 0.0), -(b if finite else 0.0))

    return sorted(out, key=rank_key)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def plot_pck_curves(scores: list[MethodScores], path, human: dict | None = None) -> None:
    """PCK (%) against alpha for each method; dotted verticals at 0.05 and 0.10."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    alphas = np.array(CURVE_ALPHAS)
    for m in scores:
        ys = [m.curve.overall[alpha_key(a)] for a in alphas]
        ax.plot(alphas, ys, marker="o", ms=3, lw=2, label=m.name)
    if human:
        pts = [(a, human.get(alpha_key(a))) for a in MAIN_ALPHAS]
        pts = [(a, v) for a, v in pts if v is not None and np.isfinite(v)]
        if pts:
            ax.scatter(*zip(*pts), marker="*", s=140, color="black", zorder=5, label="human agreement")
    for a in MAIN_ALPHAS:
        ax.axvline(a, color="0.6", ls=":", lw=1)
    ax.set_xlim(0, alphas[-1] + 0.005)
    ax.set_ylim(0, 103)  # headroom: a 100 % point (human agreement) must not sit on the frame
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel(f"alpha (threshold = alpha x {IMAGE_SIZE} px)")
    ax.set_ylabel("PCK (%)")
    ax.set_title("PCK against the threshold, both directions")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_per_category(scores: list[MethodScores], path, alpha: float = 0.10) -> None:
    """Horizontal grouped bars: PCK@alpha per category (rows) and method (colours)."""
    plt = _plt()
    key = alpha_key(alpha)
    cats = []
    for m in scores:
        for c in m.main.per_category:
            if c not in cats:
                cats.append(c)
    n_m = max(len(scores), 1)
    dots = len(cats) * n_m > 60   # many categories (the full 125): one row each, a dot per method
    height = max(3.0, (0.19 * len(cats) if dots else 0.16 * len(cats) * n_m) + 1.4)
    fig, ax = plt.subplots(figsize=(7.0, height), dpi=110)
    bar = 0.8 / n_m
    y = np.arange(len(cats))
    for j, m in enumerate(scores):
        vals = [m.main.per_category.get(c, {}).get(key, np.nan) for c in cats]
        if dots:
            ax.plot(vals, y, "o", ms=5, alpha=0.85, label=m.name)
        else:
            ax.barh(y + (j - (n_m - 1) / 2) * bar, vals, height=bar, label=m.name)
    ax.set_yticks(y, [c.replace("_", " ") for c in cats])
    ax.set_xlim(0, 101.5)  # a 100 % dot must not be cut by the frame
    ax.set_xlabel(f"PCK@{alpha:.2f} (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(len(cats) - 0.5, -0.5)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0 + 0.35 / height), ncol=min(n_m, 4), frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def choose_examples(ann, n: int) -> list[int]:
    """Up to ``n`` annotation rows for example figures: the first pair of evenly spread categories."""
    first_of: dict[str, int] = {}
    for i, c in enumerate(ann.category):
        first_of.setdefault(c, i)
    rows = list(first_of.values())
    if len(rows) < n:  # few categories: add further pairs, spread over the file
        extra = [i for i in np.linspace(0, len(ann) - 1, n * 2).round().astype(int) if i not in rows]
        rows += extra
    if len(rows) > n:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]
    return sorted(dict.fromkeys(rows))[:n]


def plot_example(ann, row: int, images_root, systems, path, alpha: float = 0.10) -> None:
    """One example pair: a panel per system, sketch | photo with lines from each sketch keypoint
    to where the system puts it on the photo.

    Parameters
    ----------
    systems : list of (name, points [8, 2] or None)
        ``None`` means the ground truth itself. Predicted points within ``alpha * 256`` of the
        ground truth are drawn as filled dots, misses as crosses; the ground truth as rings.
    """
    plt = _plt()
    sketch = read_image(images_root, ann.sketch[row], "rgb")
    photo = read_image(images_root, ann.photo[row], "rgb")
    gap = 12
    canvas = np.full((IMAGE_SIZE, 2 * IMAGE_SIZE + gap, 3), 255, np.uint8)
    canvas[:, :IMAGE_SIZE] = sketch
    canvas[:, IMAGE_SIZE + gap:] = photo
    off = IMAGE_SIZE + gap
    n = len(systems)
    ncols = 2 if n > 1 else 1
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 2.75 * nrows), dpi=100, squeeze=False)
    src = ann.sketch_kps[row]
    gt = ann.photo_kps[row]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, pts) in zip(axes.ravel(), systems):
        ax.imshow(canvas)
        for x0 in (0, off):  # frame both images: a white sketch would melt into the page
            ax.add_patch(plt.Rectangle((x0 - 0.5, -0.5), IMAGE_SIZE, IMAGE_SIZE, fill=False, ec="0.65", lw=0.8))
        target = gt if pts is None else np.asarray(pts)
        ok = np.linalg.norm(target - gt, axis=-1) <= alpha * IMAGE_SIZE
        for k in range(NUM_KEYPOINTS):
            col = KEYPOINT_COLORS[k % len(KEYPOINT_COLORS)]
            ax.plot([src[k, 0], target[k, 0] + off], [src[k, 1], target[k, 1]], color=col, lw=1.3, alpha=0.85)
            ax.plot(src[k, 0], src[k, 1], "o", ms=5, color=col, mec="white", mew=0.8)
            if pts is not None:
                ax.plot(gt[k, 0] + off, gt[k, 1], "o", ms=8, mfc="none", mec=col, mew=1.5)
                marker = "o" if ok[k] else "X"
                ax.plot(target[k, 0] + off, target[k, 1], marker, ms=6, color=col, mec="black", mew=0.6)
            else:
                ax.plot(target[k, 0] + off, target[k, 1], "o", ms=6, color=col, mec="white", mew=0.8)
        label = "ground truth" if pts is None else f"{name}: {int(ok.sum())}/{NUM_KEYPOINTS} within {alpha:.2f}"
        ax.set_title(label, fontsize=10)
        ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
        ax.set_ylim(IMAGE_SIZE - 0.5, -0.5)
    fig.suptitle(f"{ann.category[row].replace('_', ' ')}: sketch {Path(ann.sketch[row]).stem} -> "
                 f"photo {Path(ann.photo[row]).stem}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def worst_pairs(result, n: int, alpha: float = 0.10) -> list[int]:
    """Annotation rows of the ``n`` worst-scored pairs of an EvalResult: lowest per-pair
    PCK@alpha, then largest mean keypoint error (both directions)."""
    pck = result.per_pair_pck.get(alpha_key(alpha))
    if pck is None or not len(result.ann_index):
        return []
    err = np.mean([result.errors[d].mean(axis=1) for d in result.errors], axis=0)
    order = np.lexsort((-err, pck))[:n]
    return [int(result.ann_index[k]) for k in order]


def warp_photo_to_sketch(photo, flow) -> np.ndarray:
    """The photo resampled on the sketch grid through a sketch_to_photo flow ``[h, w, 2]``
    (SPEC §5; read at every pixel as the scorer reads it); off-image samples are white."""
    import cv2

    px = upsample_flows_px(np.asarray(flow)[None], IMAGE_SIZE)[0].astype(np.float32)
    return cv2.remap(np.ascontiguousarray(photo), px[..., 0], px[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def plot_failures(ann, scores: MethodScores, rows: list[int], images_root, path, alpha: float = 0.10) -> None:
    """One row per failed pair: sketch (ground-truth keypoints), photo (ground truth rings and the
    method's transfers, crosses = misses), and the photo warped to the sketch (flow submissions)."""
    plt = _plt()
    res, sub = scores.main, scores.submission
    is_flow = sub.kind == "flow"
    sub_row = {pair: i for i, pair in enumerate(zip(sub.photo, sub.sketch))}
    ncols = 3 if is_flow else 2
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3.0 * ncols, 3.1 * len(rows)), dpi=90, squeeze=False)
    key = alpha_key(alpha)
    for r, row in enumerate(rows):
        k = int(np.flatnonzero(res.ann_index == row)[0])
        sketch = read_image(images_root, ann.sketch[row], "rgb")
        photo = read_image(images_root, ann.photo[row], "rgb")
        src, gt, pred = ann.sketch_kps[row], ann.photo_kps[row], res.pred["sketch_to_photo"][k]
        ok = np.linalg.norm(pred - gt, axis=-1) <= alpha * IMAGE_SIZE
        panels = [("sketch", sketch), ("photo", photo)]
        if is_flow:
            warped = warp_photo_to_sketch(photo, np.asarray(sub.sketch_to_photo)[sub_row[(ann.photo[row], ann.sketch[row])]])
            ink = sketch.min(axis=-1) < 128
            warped = warped.copy()
            warped[ink] = (0.35 * warped[ink]).astype(np.uint8)  # the strokes, darkened, over the warp
            panels.append(("photo warped to the sketch", warped))
        for c, (title, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            for j in range(NUM_KEYPOINTS):
                col = KEYPOINT_COLORS[j % len(KEYPOINT_COLORS)]
                if c == 0 or c == 2:
                    ax.plot(src[j, 0], src[j, 1], "o", ms=5, color=col, mec="white", mew=0.8)
                else:
                    ax.plot(gt[j, 0], gt[j, 1], "o", ms=8, mfc="none", mec=col, mew=1.5)
                    ax.plot(pred[j, 0], pred[j, 1], "o" if ok[j] else "X", ms=6, color=col, mec="black", mew=0.6)
            label = title
            if c == 0:
                label = f"{ann.category[row].replace('_', ' ')}: PCK@{alpha:.2f} {100 * res.per_pair_pck[key][k]:.0f}%"
            ax.set_title(label, fontsize=9)
    fig.suptitle(f"{scores.name}: worst pairs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7rem;margin:0 0 4px}
h2{font-size:1.2rem;margin:34px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.sub{color:#555;margin:0 0 18px}
table{border-collapse:collapse;width:100%;background:#fff;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;vertical-align:top;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f0f0f3;font-weight:600}
th:nth-child(2),td:nth-child(2){text-align:left}
tr.best td{background:#eef7ee}
tr.human td{color:#555;font-style:italic;background:#f7f7f7}
td .ci{display:block;color:#888;font-size:.78em;font-weight:400}
th small{font-weight:400;color:#666}
.table-wrap{overflow-x:auto}
td.main{font-weight:600}
figure{margin:12px 0 22px;background:#fff;border:1px solid #e5e5e5;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#555;font-size:.9rem;margin-top:6px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}
@media (max-width:800px){.grid2{grid-template-columns:1fr}}
code{background:#f0f0f3;padding:1px 4px;border-radius:3px}
ul.proto{columns:2;font-size:.9rem;color:#333}
"""


def _fmt(v, digits=2):
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def leaderboard_rows(scores: list[MethodScores]) -> list[dict]:
    """Leaderboard as plain rows (what the HTML table and ``psc6k demo --json`` show)."""
    rows = []
    for rank, m in enumerate(scores, start=1):
        r = m.main
        row = {"rank": rank, "method": m.name, "n_pairs": r.n_pairs, "coverage": round(r.coverage, 4),
               "mean_error_px": r.mean_error_px["overall"]}
        for a in MAIN_ALPHAS:
            key = alpha_key(a)
            row[key] = r.overall[key]
            row[f"{key}_ci95"] = r.ci95.get(key)
            for d, vals in r.per_direction.items():
                row[f"{key}_{d}"] = vals[key]
        rows.append(row)
    return rows


def _leaderboard_html(scores, human) -> str:
    k05, k10 = alpha_key(0.05), alpha_key(0.10)
    head = ("<tr><th>#</th><th>method</th><th>PCK@0.05<br><small>95% CI</small></th>"
            "<th>PCK@0.10<br><small>95% CI</small></th><th>sketch→photo<br><small>PCK@0.10</small></th>"
            "<th>photo→sketch<br><small>PCK@0.10</small></th><th>mean error<br><small>px</small></th>"
            "<th>pairs</th></tr>")
    body = []
    for row in leaderboard_rows(scores):
        def cell(key):
            ci = row.get(f"{key}_ci95")
            ci_txt = f'<span class="ci">{_fmt(ci[0], 1)} – {_fmt(ci[1], 1)}</span>' if ci else ""
            return f'<td class="main">{_fmt(row[key])}{ci_txt}</td>'
        cls = ' class="best"' if row["rank"] == 1 and len(scores) > 1 else ""
        cov = "" if row["coverage"] >= 1 else f" ({100 * row['coverage']:.0f}%)"
        body.append(f"<tr{cls}><td>{row['rank']}</td><td>{html.escape(row['method'])}</td>{cell(k05)}{cell(k10)}"
                    f"<td>{_fmt(row[f'{k10}_sketch_to_photo'])}</td><td>{_fmt(row[f'{k10}_photo_to_sketch'])}</td>"
                    f"<td>{_fmt(row['mean_error_px'], 1)}</td><td>{row['n_pairs']}{cov}</td></tr>")
    if human:
        body.append(f'<tr class="human"><td></td><td>human agreement (upper bound)</td>'
                    f"<td>{_fmt(human.get(k05))}</td><td>{_fmt(human.get(k10))}</td><td>–</td><td>–</td>"
                    f"<td>{_fmt(human.get('mean_error_px'), 1)}</td><td>{human.get('n_clicks', '–')} clicks</td></tr>")
    return (f'<div class="table-wrap"><table>\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def pairwise_rows(ann, scores: list[MethodScores], *, n_bootstrap: int = 1000, seed: int = 0) -> list[dict]:
    """Every pair of methods (better-ranked first) compared on their common pairs.

    Row keys: ``a``, ``b``, ``n_pairs``, and per alpha ``<key>_delta`` (points, a - b),
    ``<key>_ci95``, ``<key>_p`` (exact sign-flip), ``<key>_verdict`` (:func:`psc6k.compare.verdict`:
    "better" only when p < 0.05 and the CI excludes 0), ``<key>_categories_significant`` (categories
    whose Holm-adjusted p is below 0.05, with the sign of their delta: ``[a better, b better]``),
    ``categories_min_attainable_p`` (the smallest p the exact test can give in the largest
    category) and ``categories_can_reach_significance``.
    """
    rows = []
    for i, ma in enumerate(scores):
        for mb in scores[i + 1:]:
            cmp = compare_results(ann, ma.main, mb.main, alphas=MAIN_ALPHAS, n_bootstrap=n_bootstrap, seed=seed)
            row = {"a": ma.name, "b": mb.name, "n_pairs": cmp.n_pairs}
            best_p = min((c["min_attainable_p"] for c in cmp.per_category.values()), default=1.0)
            row.update({"categories_min_attainable_p": best_p,
                        "categories_can_reach_significance": best_p < SIGNIFICANCE})
            for a in MAIN_ALPHAS:
                key = alpha_key(a)
                sig = [c for c in cmp.per_category.values() if c["p_adjusted"][key] < 0.05]
                row.update({f"{key}_delta": cmp.delta[key], f"{key}_ci95": cmp.ci95[key],
                            f"{key}_p": cmp.p_value[key],
                            f"{key}_verdict": verdict(cmp.delta[key], cmp.ci95[key], cmp.p_value[key]),
                            f"{key}_categories_significant": [sum(c["delta"][key] > 0 for c in sig),
                                                              sum(c["delta"][key] < 0 for c in sig)]})
            rows.append(row)
    return rows


def format_pairwise(rows) -> str:
    """Pairwise comparison rows (:func:`pairwise_rows`) as a plain-text table."""
    if not rows:
        return ""
    lines = [f"{'A vs B':<46} {'dPCK@0.05':>9} {'95% CI':>15} {'p':>7} {'dPCK@0.10':>9} {'95% CI':>15} {'p':>7}  verdict@0.10"]

    def ci(v):
        return f"{v[0]:+6.1f},{v[1]:+6.1f}" if v else ""

    def p(v):
        return f"{v:.3f}" if v >= 0.001 else f"{v:.0e}"

    for r in rows:
        name = f"{r['a'][:21]} vs {r['b'][:21]}"
        lines.append(f"{name:<46} {r['pck@0.05_delta']:+9.2f} {ci(r['pck@0.05_ci95']):>15} {p(r['pck@0.05_p']):>7} "
                     f"{r['pck@0.10_delta']:+9.2f} {ci(r['pck@0.10_ci95']):>15} {p(r['pck@0.10_p']):>7}  "
                     f"{r['pck@0.10_verdict']}")
    note = _small_sample_text(rows)
    return "\n".join(lines + ([note] if note else []))


def _small_sample_text(rows) -> str:
    """The per-category caveat when no category is large enough for the exact test to reach 0.05."""
    weak = [r for r in rows if not r["categories_can_reach_significance"]]
    if not weak:
        return ""
    return (f"Per-category tests cannot reach significance here: the largest category has too few pairs, so the "
            f"exact sign-flip test can give no p below {weak[0]['categories_min_attainable_p']:.3g} (>= 0.05); "
            "no category difference is called better.")


def _pairwise_html(rows) -> str:
    if not rows:
        return ""
    keys = [alpha_key(a) for a in MAIN_ALPHAS]
    head = "<tr><th style=\"text-align:left\">A</th><th>vs B</th>" + "".join(
        f"<th>&Delta;{k.upper()}<br><small>A &minus; B, 95% CI</small></th><th>p<br><small>sign-flip</small></th>"
        f"<th>verdict</th><th>categories<br><small>A / B better*</small></th>" for k in keys) + "<th>pairs</th></tr>"
    body = []
    for r in rows:
        cells = [f'<td style="text-align:left">{html.escape(r["a"])}</td><td>{html.escape(r["b"])}</td>']
        for k in keys:
            ci = r[f"{k}_ci95"]
            ci_txt = f'<span class="ci">{_fmt(ci[0], 1)} – {_fmt(ci[1], 1)}</span>' if ci else ""
            p = r[f"{k}_p"]
            p_txt = f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"
            won, lost = r[f"{k}_categories_significant"]
            cat_txt = f"{won} / {lost}" if r["categories_can_reach_significance"] else "– (too few pairs)"
            cells.append(f'<td class="main">{r[f"{k}_delta"]:+.2f}{ci_txt}</td><td>{p_txt}</td>'
                         f'<td>{html.escape(r[f"{k}_verdict"])}</td><td>{cat_txt}</td>')
        body.append("<tr>" + "".join(cells) + f"<td>{r['n_pairs']}</td></tr>")
    note = _small_sample_text(rows)
    return (f'<div class="table-wrap"><table>\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>" + (f'\n<p class="sub warn">{html.escape(note)}</p>' if note else ""))


def _per_keypoint_html(scores, alpha: float = 0.10) -> str:
    """PCK per keypoint index (0-7) and direction of each method, at ``alpha``."""
    key = alpha_key(alpha)
    head = "<tr><th style=\"text-align:left\">method</th><th>direction</th>" + "".join(
        f"<th>{k}</th>" for k in range(NUM_KEYPOINTS)) + "</tr>"
    body = []
    for m in scores:
        for d, per_alpha in m.main.per_keypoint.items():
            body.append(f'<tr><td style="text-align:left">{html.escape(m.name)}</td><td>{html.escape(d)}</td>'
                        + "".join(f"<td>{_fmt(v, 1)}</td>" for v in per_alpha[key]) + "</tr>")
    return (f'<div class="table-wrap"><table>\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def report_provenance(ann, protocol: str = "psc6k", command=None, date: str | None = None) -> dict:
    """Where a report's numbers come from: :func:`psc6k.pck.provenance` plus the annotation file,
    the command line (a list of arguments, or None) and the UTC date."""
    return {**provenance(ann, protocol), "annotations": ann.source,
            "command": None if command is None else " ".join(str(c) for c in command),
            "date": date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _figure(src, alt, caption) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">'
            f"<figcaption>{caption}</figcaption></figure>")


def write_report(ann, submissions, images_root, out_dir, *, clicks=None, title: str = "PSC6K report",
                 n_examples: int = 6, allow_partial: bool = False, n_bootstrap: int = 1000, n_failures: int = 3,
                 subtitle: str | None = None, progress: bool = False, protocol: str = "psc6k",
                 command=None) -> Path:
    """Score ``submissions`` on ``ann`` and write the report folder; returns ``index.html``.

    Parameters
    ----------
    ann : psc6k.formats.Annotations
    submissions : sequence of psc6k.submission.Submission
    images_root : path
        Sketchy root the annotation paths are relative to (for the example pictures).
    out_dir : path
        Created if needed; files of the same names are overwritten.
    clicks : pandas.DataFrame, optional
        Raw crowd clicks: adds the consistency heatmap and the human agreement row.
    n_examples : int
        Example pairs drawn.
    n_failures : int
        Worst pairs per method in the failure gallery (0: no gallery).
    protocol : str
        Evaluation protocol (:mod:`psc6k.protocols`).
    command : sequence of str, optional
        The command line that made the report, recorded in ``provenance``.
    """
    from tqdm import tqdm

    submissions = list(submissions)
    if not submissions:
        raise Psc6kError("no submissions to report on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "examples").mkdir(exist_ok=True)
    steps = tqdm(total=4 + n_examples, desc="report", unit="step", disable=not progress, leave=False)

    scores = score_submissions(ann, submissions, allow_partial=allow_partial, n_bootstrap=n_bootstrap,
                               protocol=protocol)
    provenance = report_provenance(ann, protocol, command)
    steps.update(1)

    human, consistency = None, None
    if clicks is not None:
        consistency = compute_consistency(clicks, [(m.name, m.submission) for m in scores], ann)
        write_consistency(consistency, out_dir)
        human = consistency.human_agreement or None
    steps.update(1)

    plot_pck_curves(scores, out_dir / "pck_curve.png", human)
    plot_per_category(scores, out_dir / "per_category.png")
    steps.update(1)

    example_files = []
    for j, row in enumerate(choose_examples(ann, n_examples)):
        systems = [("ground truth", None)]
        for m in scores:
            hit = np.flatnonzero(m.main.ann_index == row)
            if hit.size:
                systems.append((m.name, m.main.pred["sketch_to_photo"][hit[0]]))
        name = f"examples/pair_{j + 1:02d}.png"
        plot_example(ann, row, images_root, systems, out_dir / name)
        example_files.append((name, row))
        steps.update(1)

    pairwise = pairwise_rows(ann, scores, n_bootstrap=n_bootstrap)
    failure_files = []
    if n_failures > 0:
        (out_dir / "failures").mkdir(exist_ok=True)
        for j, m in enumerate(scores):
            rows = worst_pairs(m.main, n_failures)
            if rows:
                name = f"failures/method_{j + 1:02d}.png"
                plot_failures(ann, m, rows, images_root, out_dir / name)
                failure_files.append((name, m.name, rows))
    results = {"title": title, "methods": [m.main.to_dict() for m in scores],
               "leaderboard": leaderboard_rows(scores), "pairwise": pairwise,
               "curve": {m.name: {alpha_key(a): m.curve.overall[alpha_key(a)] for a in CURVE_ALPHAS} for m in scores},
               "human_agreement": human,
               "consistency": consistency.to_dict() if consistency is not None else None,
               "provenance": provenance}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n",
                                          encoding="utf-8")

    page = _page(ann, scores, human, consistency, example_files, title, subtitle, pairwise, failure_files,
                 provenance)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    steps.update(1)
    steps.close()
    return index


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _page(ann, scores, human, consistency, example_files, title, subtitle, pairwise=(), failure_files=(),
          provenance=None) -> str:
    proto = scores[0].main.protocol
    n_cat = len(set(ann.category))
    sub = subtitle or (f"{len(ann)} photo-sketch pairs, {n_cat} categories, {NUM_KEYPOINTS} keypoints each; "
                       f"{len(scores)} method{'s' if len(scores) != 1 else ''}.")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>", f'<p class="sub">{html.escape(sub)}</p>',
        "<h2>Leaderboard</h2>",
        _leaderboard_html(scores, human),
        '<p class="sub" style="margin-top:8px">PCK: share of keypoints moved within alpha x 256 px of the '
        "ground truth, over both directions (sketch→photo and photo→sketch), in percent; 95% CI: percentile "
        "bootstrap over pairs. Human agreement: each click against the centroid of the other clicks of its "
        "keypoint.</p>",
    ]
    if pairwise:
        parts += ['<h2>Pairwise comparison</h2>', _pairwise_html(pairwise),
                  '<p class="sub" style="margin-top:8px">Each pair of methods on the same pairs: &Delta; = PCK of A '
                  "minus PCK of B in points; 95% CI: paired bootstrap over pairs; p: two-sided exact paired "
                  "sign-flip test of the per-pair difference; verdict: &ldquo;better&rdquo; only when p &lt; 0.05 "
                  "and the CI excludes 0. *Categories where A (or B) is better with a "
                  "Holm-adjusted p below 0.05. Computed by <code>psc6k compare</code>.</p>"]
    parts += [
        '<h2>PCK against alpha</h2>',
        _figure("pck_curve.png", "PCK against alpha", "PCK for alpha from 0.01 to 0.20 (dotted: the reported 0.05 and 0.10)."),
        '<h2>Per keypoint</h2>', _per_keypoint_html(scores),
        '<p class="sub" style="margin-top:8px">PCK@0.10 of each keypoint index (0-7, the order of the '
        "annotation file) in each direction.</p>",
        '<h2>Per category</h2>',
        _figure("per_category.png", "PCK@0.10 per category", "PCK@0.10 of each method in each category."),
        '<h2>Examples</h2>',
        '<p class="sub">Left: the sketch with its keypoints; right: the photo. Lines join each sketch keypoint to '
        "where the system puts it on the photo (sketch→photo). Rings: ground truth; dots: predictions within "
        "0.10 x 256 px; crosses: misses.</p>",
    ]
    parts += [_figure(name, f"example pair {j + 1}", html.escape(f"{ann.category[row]}: {ann.sketch[row]}"))
              for j, (name, row) in enumerate(example_files)]
    if failure_files:
        parts += ['<h2>Failure gallery</h2>',
                  '<p class="sub">The worst pairs of each method (lowest per-pair PCK@0.10, then largest mean error). '
                  "Left: the sketch and its keypoints; middle: the photo with the ground truth (rings) and the "
                  "method's sketch→photo transfers (dots: hits, crosses: misses); right, for flow submissions: the "
                  "photo warped onto the sketch through the method's flow, the sketch strokes darkened on top — "
                  "where the warp is right, strokes and photo edges coincide.</p>"]
        parts += [_figure(name, f"failures of {method}", html.escape(f"{method}: " + ", ".join(
                  ann.sketch[r].rsplit("/", 1)[-1] for r in rows))) for name, method, rows in failure_files]
    if consistency is not None:
        parts += ['<h2>Human-model consistency</h2>',
                  _figure("consistency.png", "consistency heatmap",
                          "Mean distance between the photo points two systems give the same sketch keypoint, "
                          "divided by 256 (paper Fig. 5): annotator slots 1-3 and each method's sketch→photo "
                          'transfers. Numbers: <a href="consistency.csv">consistency.csv</a>.')]
    parts += ["<h2>Protocol</h2>", '<ul class="proto">']
    parts += [f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in proto.items()]
    parts += [f"<li><b>scorer</b>: {html.escape(scores[0].main.scorer_version)}</li></ul>"]
    if provenance:
        parts += ['<h2>Provenance</h2>', '<ul class="proto" id="provenance">']
        parts += [f"<li><b>{html.escape(str(k))}</b>: <code>{html.escape(str(v))}</code></li>"
                  for k, v in provenance.items()]
        parts += ["</ul>"]
    parts += ['<p class="sub">All numbers: <a href="results.json">results.json</a>.</p>', "</main></body></html>"]
    return "\n".join(parts) + "\n"
