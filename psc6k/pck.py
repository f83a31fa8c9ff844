"""PCK, exactly as the PSC6K paper evaluates it (SPEC §5). The one place PCK is computed.

Protocol, for direction ``sketch_to_photo`` (``photo_to_sketch`` is the mirror image):

1. upsample the flow ``[H, W, 2]`` bilinearly to 256 x 256 with ``align_corners=True``;
2. round each sketch keypoint (XB, YB) to the nearest pixel, half to even (``torch.round``);
3. read the flow there and convert to pixels, ``x = (u + 1) * (256 - 1) / 2``;
4. a keypoint is correct when its Euclidean distance to (XA, YA) is ``<= alpha * 256``.

PCK is the mean over pairs x both directions x 8 keypoints, in percent. Only the 8 rounded
points of a flow are ever read, so step 1 is evaluated *at those points* — bilinear
interpolation at an integer output pixel is exactly what the upsampled field holds there — which
gives the identical number without materialising 256 x 256 fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS, __version__
from psc6k.errors import SubmissionError
from psc6k.submission import DIRECTIONS, Submission, align_submission

#: Stored with every score; bump when a change could alter any number.
SCORER_VERSION = f"psc6k-pck/1 (psc6k {__version__})"
DEFAULT_ALPHAS = (0.05, 0.10)


def alpha_key(alpha: float) -> str:
    """``0.05 -> "pck@0.05"``, ``0.1 -> "pck@0.10"``, ``0.125 -> "pck@0.125"``."""
    text = f"{float(alpha):.10g}"
    if "e" in text:
        text = f"{float(alpha):.10f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"pck@{whole}.{frac.ljust(2, '0')}"


def flow_to_pixels(uv, size: int = IMAGE_SIZE):
    """Normalised flow coordinates (``align_corners=True``) -> pixels: ``(uv + 1) * (size - 1) / 2``."""
    return (np.asarray(uv, dtype=np.float64) + 1.0) * ((size - 1) / 2.0)


def pixels_to_flow(xy, size: int = IMAGE_SIZE):
    """Pixels -> normalised flow coordinates, the inverse of :func:`flow_to_pixels`."""
    return np.asarray(xy, dtype=np.float64) * (2.0 / (size - 1)) - 1.0


def round_keypoints(points_px, size: int = IMAGE_SIZE) -> np.ndarray:
    """Nearest pixel, half to even (as ``torch.round``), clipped to the image; int64 ``[..., 2]``.

    Clipping only matters for annotated points on the outer half pixel (e.g. x = 255.5).
    """
    return np.clip(np.round(np.asarray(points_px, dtype=np.float64)), 0, size - 1).astype(np.int64)


def sample_flow(flows, points_px, size: int = IMAGE_SIZE, *, index=None) -> np.ndarray:
    """Value of the ``size`` x ``size`` bilinear (``align_corners=True``) upsample of each flow,
    at the rounded source points.

    Parameters
    ----------
    flows : array, shape (M, H, W, 2)
        Flow fields on the source grid, any H, W >= 2, any float dtype.
    points_px : array, shape (N, K, 2)
        Source points (x, y) in pixels of the ``size`` x ``size`` source image.
    index : array of int, shape (N,), optional
        Flow of each row of ``points_px`` (default: ``arange(N)``, M == N). Lets callers score a
        reordered subset without copying the flows.

    Returns
    -------
    ndarray of float64, shape (N, K, 2)
        Normalised flow values (u, v) read at ``round_keypoints(points_px)``.
    """
    flows = np.asarray(flows)
    _, h, w, _ = flows.shape
    rc = round_keypoints(points_px, size)  # (N, K, 2) as (col, row)
    n = rc.shape[0]
    # Source coordinate of output pixel i under align_corners=True: i * (in - 1) / (out - 1).
    sx = rc[..., 0] * ((w - 1) / (size - 1))
    sy = rc[..., 1] * ((h - 1) / (size - 1))
    x0 = np.minimum(np.floor(sx).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(sy).astype(np.int64), h - 2)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    b = (np.arange(n) if index is None else np.asarray(index, dtype=np.int64))[:, None]
    # Gather the 4 neighbours in the flows' own dtype (no copy of the fields for contiguous
    # input), then compute in float64. One take of 8 values per point: (u, v) at x0 and x0 + 1
    # lie side by side in memory, on row y0 and on row y0 + 1 — two cache lines, not four.
    flat = flows.reshape(-1)
    corners = np.array([0, 1, 2, 3, 2 * w, 2 * w + 1, 2 * w + 2, 2 * w + 3], dtype=np.int64)
    near = np.take(flat, (((b * h + y0) * w + x0) * 2)[..., None] + corners).astype(np.float64)
    f00, f01, f10, f11 = near[..., 0:2], near[..., 2:4], near[..., 4:6], near[..., 6:8]
    top = f00 * (1 - fx) + f01 * fx
    bottom = f10 * (1 - fx) + f11 * fx
    return top * (1 - fy) + bottom * fy


def transfer_keypoints(flows, points_px, size: int = IMAGE_SIZE, *, index=None) -> np.ndarray:
    """Move source keypoints through flows, per the official protocol; returns target pixels.

    Parameters
    ----------
    flows : array, shape (N, H, W, 2)
        Normalised flows laid on the source grid (SPEC §5).
    points_px : array, shape (N, K, 2)
        Source keypoints (x, y), pixels.

    Returns
    -------
    ndarray of float64, shape (N, K, 2)
        Predicted (x, y) pixels in the target image.

    Examples
    --------
    >>> from psc6k.submission import identity_flow
    >>> transfer_keypoints(identity_flow(1, 16), [[[10.4, 200.5]]]).round(6).tolist()
    [[[10.0, 200.0]]]
    """
    return flow_to_pixels(sample_flow(flows, points_px, size, index=index), size)


def keypoint_errors(pred_px, target_px) -> np.ndarray:
    """Euclidean distances in pixels, shape ``pred.shape[:-1]``."""
    d = np.asarray(pred_px, dtype=np.float64) - np.asarray(target_px, dtype=np.float64)
    return np.sqrt((d * d).sum(axis=-1))


def pck_correct(pred_px, target_px, alpha: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean array: keypoint within ``alpha * size`` pixels of its target (``<=``, SPEC §5)."""
    return keypoint_errors(pred_px, target_px) <= alpha * size


@dataclass
class EvalResult:
    """Scores of one submission against one annotation set.

    ``overall``, ``per_direction[direction]`` and ``per_category[category]`` map
    ``alpha_key(alpha)`` to PCK in percent. Per-pair arrays are kept for pictures and reports:
    ``pred[direction]`` ``[n, 8, 2]`` predicted pixels, ``errors[direction]`` ``[n, 8]`` pixel
    distances, ``ann_index`` ``[n]`` the annotation row of each scored pair.
    """

    method: str
    kind: str
    alphas: tuple
    overall: dict
    per_direction: dict
    per_category: dict
    mean_error_px: dict
    ci95: dict
    n_pairs: int
    n_annotated: int
    protocol: dict
    scorer_version: str = SCORER_VERSION
    pred: dict = field(default_factory=dict, repr=False)
    errors: dict = field(default_factory=dict, repr=False)
    ann_index: np.ndarray | None = field(default=None, repr=False)
    per_pair_pck: dict = field(default_factory=dict, repr=False)

    @property
    def coverage(self) -> float:
        return self.n_pairs / self.n_annotated if self.n_annotated else 0.0

    def to_dict(self, *, per_pair: bool = False, ann=None) -> dict:
        """The JSON of ``psc6k eval --json`` (and of the server's ``/score``)."""
        out = {
            "method": self.method, "kind": self.kind,
            "overall": self.overall, "per_direction": self.per_direction, "per_category": self.per_category,
            "mean_error_px": self.mean_error_px, "ci95": self.ci95,
            "n_pairs": self.n_pairs, "n_annotated": self.n_annotated, "coverage": round(self.coverage, 6),
            "protocol": self.protocol, "scorer_version": self.scorer_version,
        }
        if per_pair and ann is not None:
            rows = []
            for k, i in enumerate(self.ann_index):
                rows.append({"photo": ann.photo[i], "sketch": ann.sketch[i], "category": ann.category[i],
                             **{f"{d}_error_px": self.errors[d][k].round(4).tolist() for d in DIRECTIONS}})
            out["per_pair"] = rows
        return out


def _pct(x) -> float:
    return float(100.0 * np.mean(x)) if np.size(x) else float("nan")


def bootstrap_ci(per_pair, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> list:
    """Percentile bootstrap CI (in percent) of the mean of per-pair PCK values, resampling pairs.

    Resampling n pairs with replacement and averaging is the same, in distribution, as drawing
    multinomial counts over the pairs' *distinct* values (a per-pair PCK over 16 keypoints takes
    at most 17), so each resample costs O(17) instead of O(n). Seeded per call, so the interval
    of one alpha does not depend on which other alphas are evaluated.
    """
    per_pair = np.asarray(per_pair, dtype=np.float64)
    values, inverse = np.unique(per_pair, return_inverse=True)
    freqs = np.bincount(inverse.ravel(), minlength=len(values)) / per_pair.size
    counts = np.random.default_rng(seed).multinomial(per_pair.size, freqs, size=n_bootstrap)
    means = counts @ values * (100.0 / per_pair.size)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def evaluate(ann, sub: Submission, alphas=DEFAULT_ALPHAS, *, allow_partial: bool = False,
             n_bootstrap: int = 1000, seed: int = 0, size: int = IMAGE_SIZE) -> EvalResult:
    """Score a submission by PCK@alpha (SPEC §5).

    Parameters
    ----------
    ann : psc6k.formats.Annotations
    sub : psc6k.submission.Submission
    alphas : sequence of float
        Thresholds as fractions of the image side (``alpha * size`` pixels).
    allow_partial : bool
        Score the covered pairs only instead of raising on missing pairs.
    n_bootstrap : int
        Resamples of pairs for the 95% confidence interval (0 to skip).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    EvalResult
    """
    alphas = tuple(float(a) for a in alphas)
    ann_idx, sub_idx = align_submission(sub, ann, allow_partial=allow_partial)
    if len(ann_idx) == 0:
        raise SubmissionError("no submitted pair is in the annotations")
    photo_kps, sketch_kps = ann.photo_kps[ann_idx], ann.sketch_kps[ann_idx]
    source_target = {"sketch_to_photo": (sketch_kps, photo_kps), "photo_to_sketch": (photo_kps, sketch_kps)}
    pred, errors = {}, {}
    for d in DIRECTIONS:
        values = np.asarray(getattr(sub, d))
        src, tgt = source_target[d]
        if sub.kind == "flow":
            pred[d] = transfer_keypoints(values, src, size, index=sub_idx)
        else:
            pred[d] = values[sub_idx].astype(np.float64)
        errors[d] = keypoint_errors(pred[d], tgt)

    all_pred = np.stack([pred[d] for d in DIRECTIONS], axis=1)  # (n, 2, 8, 2)
    all_tgt = np.stack([source_target[d][1] for d in DIRECTIONS], axis=1)
    all_err = np.stack([errors[d] for d in DIRECTIONS], axis=1)  # (n, 2, 8)
    overall, per_direction, ci95, per_pair = {}, {d: {} for d in DIRECTIONS}, {}, {}
    # Categories as integer codes in ann.categories order: per-category means by bincount. Each
    # per-pair PCK is k/16, so every partial sum is exact and equals np.mean's to the last bit.
    order = list(dict.fromkeys([*ann.categories, *(ann.category[i] for i in ann_idx)]))
    code_of = {c: k for k, c in enumerate(order)}
    codes = np.fromiter((code_of[ann.category[i]] for i in ann_idx), np.int64, len(ann_idx))
    counts = np.bincount(codes, minlength=len(order))
    present = np.flatnonzero(counts)
    per_category = {order[k]: {"n_pairs": int(counts[k])} for k in present}
    n = len(ann_idx)
    for a in alphas:
        key = alpha_key(a)
        correct = pck_correct(all_pred, all_tgt, a, size)  # the one threshold rule
        overall[key] = _pct(correct)
        for j, d in enumerate(DIRECTIONS):
            per_direction[d][key] = _pct(correct[:, j])
        pair_pck = correct.reshape(n, -1).mean(axis=1)
        per_pair[key] = pair_pck
        sums = np.bincount(codes, weights=pair_pck, minlength=len(order))
        for k in present:
            per_category[order[k]][key] = float(100.0 * (sums[k] / counts[k]))
        if n_bootstrap > 0:
            ci95[key] = bootstrap_ci(pair_pck, n_bootstrap, seed)
    mean_error = {"overall": float(all_err.mean()), **{d: float(errors[d].mean()) for d in DIRECTIONS}}
    protocol = {
        "threshold_basis": "image_size", "image_size": size, "alphas": list(alphas),
        "thresholds_px": [a * size for a in alphas], "comparison": "distance <= threshold",
        "directions": list(DIRECTIONS), "keypoints_per_pair": NUM_KEYPOINTS,
        "flow_upsampling": "bilinear, align_corners=True", "keypoint_rounding": "nearest, half to even",
        "pooling": "mean over pairs x directions x keypoints (equals the mean of per-pair PCK)",
        "ci95": f"percentile bootstrap over pairs, {n_bootstrap} resamples, seed {seed}" if n_bootstrap else "off",
    }
    return EvalResult(sub.method, sub.kind, alphas, overall, per_direction, per_category, mean_error, ci95,
                      n, len(ann), protocol, SCORER_VERSION, pred, errors, ann_idx, per_pair)


def format_table(res: EvalResult, *, categories: bool = True) -> str:
    """The table ``psc6k eval`` prints: overall, 95% CI, per direction and per category."""
    keys = [alpha_key(a) for a in res.alphas]
    thr = ", ".join(f"{a:g} -> {a * res.protocol['image_size']:g} px" for a in res.alphas)
    lines = [f"method: {res.method} ({res.kind})   pairs: {res.n_pairs}/{res.n_annotated}"
             f"   coverage: {100 * res.coverage:.1f}%   alpha: {thr}", ""]
    head = f"{'':24}" + "".join(f"{k.upper():>12}" for k in keys) + f"{'err px':>10}"
    lines += [head, "-" * len(head)]
    lines.append(f"{'overall':24}" + "".join(f"{res.overall[k]:12.2f}" for k in keys)
                 + f"{res.mean_error_px['overall']:10.2f}")
    if res.ci95:
        lines.append(f"{'  95% CI (bootstrap)':24}" + "".join(
            f"{'%.1f-%.1f' % tuple(res.ci95[k]):>12}" for k in keys))
    for d in DIRECTIONS:
        lines.append(f"{d:24}" + "".join(f"{res.per_direction[d][k]:12.2f}" for k in keys)
                     + f"{res.mean_error_px[d]:10.2f}")
    if categories and res.per_category:
        lines += ["", f"{'category (pairs)':24}" + "".join(f"{k.upper():>12}" for k in keys)]
        for cat, row in res.per_category.items():
            lines.append(f"{cat[:18] + ' (' + str(row['n_pairs']) + ')':24}" + "".join(f"{row[k]:12.2f}" for k in keys))
    return "\n".join(lines)
