"""Dense metrics against exact ground-truth flows: AEPE, dense PCK, and confidence maps scored by
sparsification curves and AUSE (as DenseMatching / PDC-Net report them).

Ground-truth flows exist where the correspondence is known for every pixel — ``psc6k synth``
writes them (``gt_flows.npz``, a flow submission in the SPEC §5 convention), and the bundled
sample has one. PSC6K's own annotations are sparse; for them use :mod:`psc6k.pck`.

Protocol (stored with every result, ``DenseResult.protocol``):

- both flows (predicted and ground truth) are upsampled to the 256 x 256 source grid exactly as
  the official scorer reads flows (bilinear, ``align_corners=True``: :func:`psc6k.pck.sample_flow`
  at every pixel) and converted to pixels;
- end-point error ``EPE = ||pred - gt||`` in pixels at every source pixel whose ground-truth
  target lies on the target image (``-0.5 <= x, y <= 255.5``); other pixels have no true
  correspondence and are left out;
- ``aepe``: mean EPE over the valid pixels of a flow, then the mean over pairs x directions
  (per-image averaging, DenseMatching's default); ``dense_pck@alpha``: share of valid pixels with
  ``EPE <= alpha * 256``, averaged the same way; ``aepe_pooled``: the mean over all valid pixels;
- confidence (optional, higher = more confident, one ``[H, W]`` map per flow, upsampled like a
  flow): the *sparsification curve* is the mean EPE of the pixels left after removing the
  fraction ``f`` least-confident ones, for ``f = 0, 1/50, ..., 49/50``; the *oracle* removes the
  pixels of largest EPE instead. Both curves are divided by the full-set AEPE of their flow;
  ``AUSE`` is the area (trapezoid over ``f``) between the curve and the oracle, per flow, then
  averaged. 0 is a perfect ranking of errors; a random confidence gives about the area
  between the flat line 1 and the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.errors import SubmissionError
from psc6k.pck import alpha_key, flow_to_pixels, sample_flow
from psc6k.submission import DIRECTIONS

#: removal fractions of the sparsification curves
SPARSIFICATION_STEPS = 50
DENSE_ALPHAS = (0.01, 0.05, 0.10)
#: pairs per chunk: bounds memory to ~chunk x 256 x 256 x 2 float64 per array
CHUNK = 16


def pixel_grid(size: int = IMAGE_SIZE) -> np.ndarray:
    """All pixels (x, y) of a ``size`` x ``size`` image, row-major, float64 ``[size * size, 2]``."""
    ys, xs = np.mgrid[0:size, 0:size]
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float64)


def upsample_flows_px(flows, size: int = IMAGE_SIZE) -> np.ndarray:
    """Flows ``[N, h, w, 2]`` -> target pixels at every source pixel, float64 ``[N, size, size, 2]``.

    The official reading of a flow (:func:`psc6k.pck.sample_flow`) evaluated at all pixels.
    """
    flows = np.asarray(flows)
    pts = np.broadcast_to(pixel_grid(size), (len(flows), size * size, 2))
    return flow_to_pixels(sample_flow(flows, pts, size), size).reshape(len(flows), size, size, 2)


def upsample_maps(maps, size: int = IMAGE_SIZE) -> np.ndarray:
    """Scalar maps ``[N, h, w]`` (confidences) upsampled like flows, float64 ``[N, size, size]``."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape[1:] == (size, size):
        return maps
    pts = np.broadcast_to(pixel_grid(size), (len(maps), size * size, 2))
    # the one bilinear reader works on 2-channel fields: carry the map in both channels
    two = np.repeat(maps[..., None], 2, axis=-1)
    return sample_flow(two, pts, size)[..., 0].reshape(len(maps), size, size)


def endpoint_errors(pred_flows, gt_flows, size: int = IMAGE_SIZE):
    """EPE in pixels and the valid mask, each ``[N, size, size]``.

    Valid: the ground-truth target lies on the target image (within half a pixel of the border).
    """
    pred = upsample_flows_px(pred_flows, size)
    gt = upsample_flows_px(gt_flows, size)
    valid = ((gt >= -0.5) & (gt <= size - 0.5)).all(axis=-1)
    epe = np.sqrt(((pred - gt) ** 2).sum(axis=-1))
    return epe, valid


def sparsification_curves(epe, confidence, valid=None, steps: int = SPARSIFICATION_STEPS):
    """Sparsification and oracle curves of one or more flows.

    Parameters
    ----------
    epe, confidence : array, shape (M, P) or (M, H, W)
        End-point errors and confidences (higher = more confident) of M flows.
    valid : bool array of the same shape, optional
        Pixels to consider (default: all).
    steps : int
        Fractions ``f = k / steps``, ``k = 0 .. steps - 1``.

    Returns
    -------
    fractions : ndarray, shape (steps,)
    curve, oracle : ndarray, shape (M, steps)
        Mean EPE of the kept pixels (``n - floor(f * n)`` of them: the most confident, or for the
        oracle the smallest errors), divided by the mean EPE of all valid pixels of the flow
        (NaN for a flow without valid pixels or with zero error everywhere). Confidence ties keep
        pixel order (a stable sort).

    Examples
    --------
    >>> e = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> f, curve, oracle = sparsification_curves(e, -e, steps=4)   # confidence ranks errors perfectly
    >>> np.allclose(curve, oracle), oracle.round(3).tolist()
    (True, [[1.0, 0.8, 0.6, 0.4]])
    """
    epe = np.asarray(epe, dtype=np.float64).reshape(len(epe), -1)
    conf = np.asarray(confidence, dtype=np.float64).reshape(len(epe), -1)
    if valid is None:
        valid = np.ones(epe.shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool).reshape(epe.shape)
    fractions = np.arange(steps) / steps
    curve = np.full((len(epe), steps), np.nan)
    oracle = np.full((len(epe), steps), np.nan)
    for m in range(len(epe)):
        e, c = epe[m][valid[m]], conf[m][valid[m]]
        n = e.size
        if n == 0:
            continue
        full = e.mean()
        if full == 0:
            continue
        keep = n - np.floor(fractions * n).astype(np.int64)          # >= 1 as f < 1
        by_conf = np.cumsum(e[np.argsort(-c, kind="stable")])
        by_err = np.cumsum(np.sort(e))
        curve[m] = by_conf[keep - 1] / keep / full
        oracle[m] = by_err[keep - 1] / keep / full
    return fractions, curve, oracle


def ause(fractions, curve, oracle) -> np.ndarray:
    """Area under the sparsification error (curve - oracle) per flow, trapezoid over the fractions."""
    from scipy.integrate import trapezoid

    diff = np.asarray(curve) - np.asarray(oracle)
    return trapezoid(diff, np.asarray(fractions), axis=-1)


@dataclass
class DenseResult:
    """Dense scores of one flow submission (see the module docstring for the protocol)."""

    method: str
    n_pairs: int
    overall: dict
    per_direction: dict
    protocol: dict
    sparsification: dict | None = None
    per_pair_aepe: dict = field(default_factory=dict, repr=False)
    pairs: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"method": self.method, "n_pairs": self.n_pairs, "overall": self.overall,
                "per_direction": self.per_direction, "sparsification": self.sparsification,
                "protocol": self.protocol}


def _align(sub, gt):
    index = {pair: i for i, pair in enumerate(zip(gt.photo, gt.sketch))}
    sub_idx, gt_idx = [], []
    for i, pair in enumerate(zip(sub.photo, sub.sketch)):
        j = index.get(pair)
        if j is not None:
            sub_idx.append(i)
            gt_idx.append(j)
    return np.asarray(sub_idx, dtype=np.int64), np.asarray(gt_idx, dtype=np.int64)


def evaluate_dense(sub, dense_gt, *, confidence: dict | None = None, alphas=DENSE_ALPHAS, size: int = IMAGE_SIZE,
                   steps: int = SPARSIFICATION_STEPS, pairs=None) -> DenseResult:
    """AEPE, dense PCK (and with ``confidence`` sparsification / AUSE) of a flow submission.

    Parameters
    ----------
    sub : psc6k.submission.Submission
        ``kind == "flow"``.
    dense_gt : psc6k.submission.Submission
        Exact ground-truth flows (e.g. ``gt_flows.npz`` of ``psc6k synth``).
    confidence : dict, optional
        ``{"sketch_to_photo": [N, H, W], "photo_to_sketch": [N, H, W]}`` aligned with ``sub``.
    pairs : set of (photo, sketch), optional
        Score only these pairs (e.g. the annotated ones).

    Raises
    ------
    SubmissionError
        A keypoint submission, or no pair shared with the ground truth.
    """
    if sub.kind != "flow":
        raise SubmissionError("dense metrics need a flow submission (this one holds keypoints)")
    gt = dense_gt
    if gt.kind != "flow":
        raise SubmissionError("`dense_gt`: the dense ground truth must hold flows", param="dense_gt")
    sub_idx, gt_idx = _align(sub, gt)
    if pairs is not None and len(sub_idx):
        keep = [k for k, i in enumerate(sub_idx) if (sub.photo[i], sub.sketch[i]) in pairs]
        sub_idx, gt_idx = sub_idx[keep], gt_idx[keep]
    if len(sub_idx) == 0:
        raise SubmissionError("no submitted pair has a ground-truth flow in `dense_gt`", param="dense_gt")
    alphas = tuple(float(a) for a in alphas)
    per_flow = {d: {"aepe": [], "sum": 0.0, "count": 0, **{alpha_key(a): [] for a in alphas}} for d in DIRECTIONS}
    sparse = {d: {"curve": [], "oracle": [], "ause": []} for d in DIRECTIONS} if confidence else None
    for start in range(0, len(sub_idx), CHUNK):
        si, gi = sub_idx[start:start + CHUNK], gt_idx[start:start + CHUNK]
        for d in DIRECTIONS:
            epe, valid = endpoint_errors(np.asarray(getattr(sub, d))[si], np.asarray(getattr(gt, d))[gi], size)
            n_valid = valid.sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                per_flow[d]["aepe"].extend(((epe * valid).sum(axis=(1, 2)) / n_valid).tolist())
                for a in alphas:
                    hit = ((epe <= a * size) & valid).sum(axis=(1, 2)) / n_valid
                    per_flow[d][alpha_key(a)].extend((100.0 * hit).tolist())
            per_flow[d]["sum"] += float((epe * valid).sum())
            per_flow[d]["count"] += int(valid.sum())
            if sparse is not None:
                conf = upsample_maps(np.asarray(confidence[d])[si], size)
                f, curve, oracle = sparsification_curves(epe, conf, valid, steps)
                sparse[d]["curve"].append(curve)
                sparse[d]["oracle"].append(oracle)
                sparse[d]["ause"].extend(ause(f, curve, oracle).tolist())

    def summary(ds):
        out = {"aepe": float(np.nanmean(np.concatenate([per_flow[d]["aepe"] for d in ds])))}
        total = sum(per_flow[d]["count"] for d in ds)
        out["aepe_pooled"] = sum(per_flow[d]["sum"] for d in ds) / total if total else float("nan")
        for a in alphas:
            k = alpha_key(a)
            out[f"dense_{k}"] = float(np.nanmean(np.concatenate([per_flow[d][k] for d in ds])))
        if sparse is not None:
            out["ause"] = float(np.nanmean(np.concatenate([sparse[d]["ause"] for d in ds])))
        return out

    sparsification = None
    if sparse is not None:
        fractions = (np.arange(steps) / steps).tolist()
        sparsification = {"fractions": fractions}
        for d in DIRECTIONS:
            sparsification[d] = {
                "curve": np.nanmean(np.concatenate(sparse[d]["curve"]), axis=0).tolist(),
                "oracle": np.nanmean(np.concatenate(sparse[d]["oracle"]), axis=0).tolist()}
    protocol = {
        "ground_truth": "exact dense flows (dense_gt), SPEC §5 convention", "resolution": f"{size} x {size}",
        "upsampling": "bilinear, align_corners=True (psc6k.pck.sample_flow at every pixel)",
        "valid_pixels": "ground-truth target inside the target image (-0.5 .. size - 0.5)",
        "averaging": "per flow (pair x direction), then mean over flows; aepe_pooled: mean over all valid pixels",
        "dense_pck": "share of valid pixels with EPE <= alpha * size, percent",
        "sparsification": (f"{steps} removal fractions k/{steps}; least confident removed first; oracle removes "
                           "largest EPE first; curves normalised by the flow's AEPE; AUSE = trapezoid of "
                           "curve - oracle, per flow, then mean") if confidence else "no confidence given",
    }
    return DenseResult(sub.method, int(len(sub_idx)), summary(DIRECTIONS),
                       {d: summary((d,)) for d in DIRECTIONS}, protocol, sparsification,
                       {d: np.asarray(per_flow[d]["aepe"]) for d in DIRECTIONS},
                       [(sub.photo[i], sub.sketch[i]) for i in sub_idx])


def format_dense(res: DenseResult) -> str:
    """Plain-text table of dense scores."""
    keys = [k for k in res.overall if k.startswith("dense_")]
    head = f"{'dense (' + str(res.n_pairs) + ' pairs)':<22}{'AEPE px':>9}{'pooled':>9}" + "".join(
        f"{k.replace('dense_pck', 'PCK'):>10}" for k in keys) + (f"{'AUSE':>8}" if "ause" in res.overall else "")
    lines = [head]
    for name, row in (("both directions", res.overall), *res.per_direction.items()):
        line = f"{name:<22}{row['aepe']:>9.2f}{row['aepe_pooled']:>9.2f}" + "".join(f"{row[k]:>10.2f}" for k in keys)
        if "ause" in row:
            line += f"{row['ause']:>8.4f}"
        lines.append(line)
    return "\n".join(lines)

