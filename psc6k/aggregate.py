"""Crowd-click aggregation: the 3-sigma outlier rule of PSC6K (SPEC §4, paper Appendix A.2).

Every (photo, sketch, keypoint) was clicked on the photo by several participants (3 in PSC6K).
For one keypoint with clicks x_1..x_n let x~ be their coordinate-wise median and
d_i = ||x_i - x~||_2^2 (squared distance, pixels^2). Over **all clicks of the study** compute the
mean mu and the standard deviation sigma of d (population std, ``ddof=0``). A click with
d > mu + 3 sigma (strict) is an outlier and is left out; the ground truth is the mean of the kept
clicks. The paper rejected 0.74 % of the clicks this way.

This module is core: numpy and pandas only (no web, no torch). Input is the raw clicks table of
:mod:`psc6k.formats` (``read_clicks``), columns ``participant, photo, sketch, keypoint, x, y, ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.errors import Psc6kError
from psc6k.formats import Annotations
from psc6k.pck import alpha_key, keypoint_errors, pck_correct

#: Columns ``aggregate_clicks`` needs; other columns are carried through untouched.
REQUIRED_COLUMNS = ("photo", "sketch", "keypoint", "x", "y")
_KEY = ["photo", "sketch", "keypoint"]


@dataclass
class ClickAggregate:
    """Result of :func:`aggregate_clicks`.

    Attributes
    ----------
    keypoints : pandas.DataFrame
        One row per (photo, sketch, keypoint), sorted by those columns, with ``x, y`` the mean of
        the kept clicks (NaN when every click of the keypoint was rejected), ``median_x, median_y``,
        ``n_clicks`` (all clicks) and ``n_kept``.
    kept : ndarray of bool, shape (n_clicks,)
        Aligned with the rows of the input table: False for an outlier.
    sq_dist : ndarray of float64, shape (n_clicks,)
        d_i, the squared distance of each click to its keypoint's coordinate-wise median (px^2).
    mu, sigma, threshold : float
        Mean and population standard deviation of ``sq_dist`` over the whole study, and
        ``mu + n_sigma * sigma``; a click is rejected when ``sq_dist > threshold``.
    n_sigma : float
    """

    keypoints: pd.DataFrame
    kept: np.ndarray
    sq_dist: np.ndarray
    mu: float
    sigma: float
    threshold: float
    n_sigma: float

    @property
    def n_clicks(self) -> int:
        return int(self.kept.size)

    @property
    def n_rejected(self) -> int:
        return int((~self.kept).sum())

    @property
    def rejected_fraction(self) -> float:
        """Fraction of all clicks rejected as outliers (0..1); the paper: 0.0074."""
        return self.n_rejected / self.n_clicks if self.n_clicks else 0.0

    def keypoints_with_fewer_than(self, n: int = 2) -> pd.DataFrame:
        """Keypoints left with fewer than ``n`` kept clicks (rows of :attr:`keypoints`)."""
        return self.keypoints[self.keypoints["n_kept"] < n]

    def photo_keypoints(self, photo, sketch, num_keypoints: int = NUM_KEYPOINTS) -> np.ndarray:
        """Ground-truth photo keypoints for the given pairs.

        Parameters
        ----------
        photo, sketch : sequence of str, length N
            The pairs, in the order wanted.

        Returns
        -------
        ndarray of float64, shape (N, num_keypoints, 2)
            (x, y) pixels; NaN where a keypoint has no click or no kept click.
        """
        out = np.full((len(photo), num_keypoints, 2), np.nan)
        index = {(p, s): i for i, (p, s) in enumerate(zip(photo, sketch))}
        kp = self.keypoints
        for p, s, k, x, y in zip(kp["photo"], kp["sketch"], kp["keypoint"], kp["x"], kp["y"]):
            i = index.get((p, s))
            if i is not None and 0 <= k < num_keypoints:
                out[i, k] = (x, y)
        return out

    def complete_pairs(self, photo, sketch, sketch_kps, *, categories=None, source=None) -> "CompletePairs":
        """Ground truth of the listed pairs whose every keypoint kept a click.

        The one way aggregated clicks become :class:`psc6k.formats.Annotations`: a pair with a
        keypoint that has no kept click is left out (never written with a missing point), and
        :meth:`CompletePairs.incomplete` says which pairs and keypoints those are.

        Parameters
        ----------
        photo, sketch : sequence of str, length N
            The pairs, in the order wanted.
        sketch_kps : array, shape (N, 8, 2)
            The sketch keypoints (XB, YB) of those pairs.
        categories, source
            Passed to :meth:`psc6k.formats.Annotations.from_arrays`.

        Returns
        -------
        CompletePairs
        """
        photo, sketch = list(photo), list(sketch)
        photo_kps = self.photo_keypoints(photo, sketch)
        complete = np.isfinite(photo_kps).all(axis=(1, 2))
        keep = np.flatnonzero(complete)
        sketch_kps = np.asarray(sketch_kps, dtype=np.float64).reshape(len(photo), NUM_KEYPOINTS, 2)
        ann = Annotations.from_arrays([photo[i] for i in keep], [sketch[i] for i in keep], photo_kps[keep],
                                      sketch_kps[keep], categories=categories, source=source)
        return CompletePairs(ann, complete, photo_kps, photo, sketch)

    def summary(self) -> dict:
        """JSON-ready numbers (what ``psc6k aggregate --json`` prints)."""
        few = self.keypoints_with_fewer_than(2)
        return {
            "n_clicks": self.n_clicks,
            "n_keypoints": int(len(self.keypoints)),
            "n_rejected": self.n_rejected,
            "rejected_fraction": self.rejected_fraction,
            "mu_sq_px": self.mu,
            "sigma_sq_px": self.sigma,
            "threshold_sq_px": self.threshold,
            "n_sigma": self.n_sigma,
            "keypoints_fewer_than_2_kept": int(len(few)),
            "keypoints_without_kept_click": int((self.keypoints["n_kept"] == 0).sum()),
        }


@dataclass
class CompletePairs:
    """Result of :meth:`ClickAggregate.complete_pairs`.

    Attributes
    ----------
    annotations : psc6k.formats.Annotations
        The complete pairs, in the listed order.
    complete : ndarray of bool, shape (N,)
        Per listed pair: every keypoint has a kept click.
    photo_kps : ndarray of float64, shape (N, 8, 2)
        Aggregated photo keypoints of every listed pair (NaN where no click was kept).
    photo, sketch : list of str, length N
        The listed pairs.
    """

    annotations: object
    complete: np.ndarray
    photo_kps: np.ndarray
    photo: list
    sketch: list

    def incomplete(self) -> list[dict]:
        """The pairs left out: ``{"photo", "sketch", "keypoints_missing": [k, ...]}`` each."""
        return [{"photo": self.photo[i], "sketch": self.sketch[i],
                 "keypoints_missing": [int(k) for k in np.flatnonzero(~np.isfinite(self.photo_kps[i]).all(axis=1))]}
                for i in np.flatnonzero(~self.complete)]


def _check_clicks(clicks: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in clicks.columns]
    if missing:
        raise Psc6kError(f"clicks table lacks column(s) {', '.join(missing)}; "
                         f"expected at least {', '.join(REQUIRED_COLUMNS)}")
    table = clicks.reset_index(drop=True)
    xy = table[["x", "y"]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise Psc6kError(f"click row {row + 1} (photo={table['photo'][row]!r}, "
                         f"sketch={table['sketch'][row]!r}) has a non-finite x or y")
    kp = pd.to_numeric(table["keypoint"], errors="coerce")
    if kp.isna().any() or (kp != np.round(kp)).any() or (kp < 0).any():
        row = int(np.flatnonzero((kp.isna() | (kp != np.round(kp)) | (kp < 0)).to_numpy())[0])
        raise Psc6kError(f"click row {row + 1}: keypoint {table['keypoint'][row]!r} is not a "
                         f"0-based integer index")
    table = table.assign(keypoint=kp.astype(np.int64))
    return table


def aggregate_clicks(clicks: pd.DataFrame, n_sigma: float = 3.0) -> ClickAggregate:
    """Aggregate raw clicks into one ground-truth point per keypoint (SPEC §4 A.2, exactly).

    Parameters
    ----------
    clicks : pandas.DataFrame
        One row per click with at least ``photo, sketch, keypoint, x, y`` (x = column, y = row,
        photo pixels); e.g. :func:`psc6k.formats.read_clicks`. Leave catch-trial and flagged
        clicks out before calling.
    n_sigma : float
        3 in the paper.

    Returns
    -------
    ClickAggregate

    Notes
    -----
    sigma is the population standard deviation (``ddof=0``) of the squared distances of all
    clicks, including keypoints with a single click (whose distance is 0). The comparison is
    strict: a click exactly at ``mu + n_sigma * sigma`` is kept.

    Examples
    --------
    >>> import pandas as pd
    >>> c = pd.DataFrame({"photo": ["p"] * 3, "sketch": ["s"] * 3, "keypoint": [0, 0, 0],
    ...                   "x": [10.0, 11.0, 12.0], "y": [5.0, 5.0, 5.0]})
    >>> agg = aggregate_clicks(c)
    >>> agg.keypoints[["x", "y", "n_kept"]].values.tolist()
    [[11.0, 5.0, 3.0]]
    """
    table = _check_clicks(clicks)
    n = len(table)
    if n == 0:
        empty = pd.DataFrame(columns=_KEY + ["x", "y", "median_x", "median_y", "n_clicks", "n_kept"])
        return ClickAggregate(empty, np.zeros(0, bool), np.zeros(0), float("nan"), float("nan"),
                              float("nan"), float(n_sigma))
    groups = table.groupby(_KEY, sort=True)
    med_x = groups["x"].transform("median").to_numpy(np.float64)
    med_y = groups["y"].transform("median").to_numpy(np.float64)
    x = table["x"].to_numpy(np.float64)
    y = table["y"].to_numpy(np.float64)
    sq_dist = (x - med_x) ** 2 + (y - med_y) ** 2
    mu = float(sq_dist.mean())
    sigma = float(sq_dist.std(ddof=0))
    threshold = mu + n_sigma * sigma
    kept = ~(sq_dist > threshold)

    work = table[_KEY].assign(x=np.where(kept, x, 0.0), y=np.where(kept, y, 0.0), kept=kept.astype(np.int64),
                              mx=med_x, my=med_y, one=1)
    g = work.groupby(_KEY, sort=True)
    sums = g[["x", "y", "kept", "one"]].sum()
    meds = g[["mx", "my"]].first()
    n_kept = sums["kept"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        gx = np.where(n_kept > 0, sums["x"].to_numpy() / n_kept, np.nan)
        gy = np.where(n_kept > 0, sums["y"].to_numpy() / n_kept, np.nan)
    keypoints = sums.index.to_frame(index=False)
    keypoints["x"] = gx
    keypoints["y"] = gy
    keypoints["median_x"] = meds["mx"].to_numpy()
    keypoints["median_y"] = meds["my"].to_numpy()
    keypoints["n_clicks"] = sums["one"].to_numpy()
    keypoints["n_kept"] = n_kept
    return ClickAggregate(keypoints, kept, sq_dist, mu, sigma, threshold, float(n_sigma))


def leave_one_out_centroids(clicks: pd.DataFrame, kept: np.ndarray | None = None) -> np.ndarray:
    """Centroid of the *other* clicks of each click's keypoint.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Columns ``photo, sketch, keypoint, x, y``.
    kept : ndarray of bool, shape (n_clicks,), optional
        Only these clicks take part (as evaluated clicks and in the others' centroids), e.g.
        ``aggregate_clicks(clicks).kept``. Default: all.

    Returns
    -------
    ndarray of float64, shape (n_clicks, 2)
        (x, y) pixels; NaN for a click left out by ``kept`` or alone in its keypoint.
    """
    table = _check_clicks(clicks)
    n = len(table)
    use = np.ones(n, bool) if kept is None else np.asarray(kept, bool)
    if use.shape != (n,):
        raise Psc6kError(f"kept has shape {use.shape}, expected ({n},)")
    x = table["x"].to_numpy(np.float64)
    y = table["y"].to_numpy(np.float64)
    work = table[_KEY].assign(x=np.where(use, x, 0.0), y=np.where(use, y, 0.0), n=use.astype(np.int64))
    g = work.groupby(_KEY, sort=False)
    sx = g["x"].transform("sum").to_numpy()
    sy = g["y"].transform("sum").to_numpy()
    others = g["n"].transform("sum").to_numpy() - 1
    valid = use & (others >= 1)
    out = np.full((n, 2), np.nan)
    out[valid, 0] = (sx[valid] - x[valid]) / others[valid]
    out[valid, 1] = (sy[valid] - y[valid]) / others[valid]
    return out


def leave_one_out_distances(clicks: pd.DataFrame, kept: np.ndarray | None = None) -> np.ndarray:
    """Distance (pixels) of each click to :func:`leave_one_out_centroids`; NaN where undefined.

    Returns
    -------
    ndarray of float64, shape (n_clicks,)
    """
    centroids = leave_one_out_centroids(clicks, kept)
    xy = clicks[["x", "y"]].to_numpy(np.float64)
    return keypoint_errors(xy, centroids)


def human_agreement(clicks: pd.DataFrame, alphas=(0.05, 0.10), kept: np.ndarray | None = None,
                    image_size: int = IMAGE_SIZE) -> dict:
    """Human agreement: PCK of each click against the centroid of the other clicks of its keypoint.

    This is the human upper bound of the benchmark (each participant scored against the
    consensus of the others). Clicks alone in their keypoint are skipped.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Columns ``photo, sketch, keypoint, x, y``.
    alphas : sequence of float
        PCK thresholds as a fraction of ``image_size`` (distance <= alpha * image_size counts,
        :func:`psc6k.pck.pck_correct`).
    kept : ndarray of bool, shape (n_clicks,), optional
        Restrict to these clicks (e.g. ``aggregate_clicks(clicks).kept``). Default: all clicks.
    image_size : int
        256 for Sketchy.

    Returns
    -------
    dict
        ``{"pck@0.05": percent, "pck@0.10": percent, "mean_error_px": float,
        "mean_error_norm": mean distance / image_size (paper Fig. 5), "n_clicks": clicks
        evaluated, "n_keypoints": keypoints with >= 2 clicks}``. PCK keys follow
        :func:`psc6k.pck.alpha_key` (as in ``psc6k eval --json``); values are NaN when nothing
        could be evaluated.
    """
    table = _check_clicks(clicks)
    centroids = leave_one_out_centroids(table, kept)
    valid = np.isfinite(centroids).all(axis=1)
    xy = table[["x", "y"]].to_numpy(np.float64)[valid]
    target = centroids[valid]
    out: dict = {}
    for alpha in alphas:
        correct = np.asarray(pck_correct(xy, target, alpha, size=image_size))
        out[alpha_key(alpha)] = float(100.0 * correct.mean()) if correct.size else float("nan")
    dist = np.hypot(*(xy - target).T) if len(xy) else np.zeros(0)
    out["mean_error_px"] = float(dist.mean()) if dist.size else float("nan")
    out["mean_error_norm"] = out["mean_error_px"] / image_size
    out["n_clicks"] = int(valid.sum())
    out["n_keypoints"] = int(table.loc[valid, _KEY].drop_duplicates().shape[0])
    return out
