"""Human-model consistency (paper Fig. 5): how far apart systems put the same keypoint.

A *system* places each sketch keypoint on the photo. The human systems are the annotator slots
of the study: slot 1 is the first click on each (pair, keypoint), slot 2 the second, slot 3 the
third (ordered by ``created_at``, then by file order). Each method is a system too: its
``sketch_to_photo`` transfer of the sketch keypoints, read the official way
(:func:`psc6k.pck.transfer_keypoints`) for flow submissions, or its keypoints as submitted.

For two systems the consistency is the mean, over every (pair, keypoint) both placed, of the
Euclidean distance between their points divided by the image size (256): 0 on the diagonal,
symmetric. Human agreement PCK (each click against the centroid of the other clicks, the
human upper bound) comes from :func:`psc6k.aggregate.human_agreement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.aggregate import aggregate_clicks, human_agreement
from psc6k.csvsafe import safe_frame
from psc6k.errors import ParameterError, Psc6kError
from psc6k.pck import transfer_keypoints
from psc6k.submission import align_submission


@dataclass
class ConsistencyResult:
    """Pairwise consistency of systems.

    Attributes
    ----------
    names : list of str, length M
        System names: ``annotator 1`` ... then the methods.
    distance : float64 [M, M]
        Mean keypoint distance / image size; NaN where two systems share no keypoint.
    counts : int [M, M]
        Number of (pair, keypoint) both systems placed.
    human_agreement : dict
        What :func:`psc6k.aggregate.human_agreement` returned (PCK of each click against the
        centroid of the others), or empty when it could not be computed.
    n_pairs : int
        Pairs covered by the clicks.
    """

    names: list
    distance: np.ndarray
    counts: np.ndarray
    human_agreement: dict = field(default_factory=dict)
    n_pairs: int = 0

    def to_dict(self) -> dict:
        def clean(v):
            return None if not np.isfinite(v) else round(float(v), 6)

        return {
            "systems": list(self.names),
            "distance": [[clean(v) for v in row] for row in self.distance],
            "counts": self.counts.astype(int).tolist(),
            "human_agreement": self.human_agreement,
            "n_pairs": int(self.n_pairs),
            "normalised_by": IMAGE_SIZE,
        }


def click_slots(clicks, n_slots: int | None = None):
    """Arrange raw clicks into annotator slots.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Raw clicks (:data:`psc6k.formats.CLICK_COLUMNS`).
    n_slots : int, optional
        Number of slots; default the largest number of clicks any keypoint received.

    Returns
    -------
    pairs : list of (photo, sketch)
        In order of first appearance.
    points : float64 [P, n_slots, 8, 2]
        Click ``s`` (0-based, by ``created_at`` then file order) of each keypoint; NaN where a
        keypoint has fewer clicks.
    """
    df = clicks.reset_index(drop=True).copy()
    df["_row"] = np.arange(len(df))
    order_cols = ["created_at", "_row"] if "created_at" in df.columns else ["_row"]
    df = df.sort_values(order_cols, kind="stable")
    pair_keys = list(dict.fromkeys(zip(clicks["photo"], clicks["sketch"])))
    pair_index = {k: i for i, k in enumerate(pair_keys)}
    p_idx = np.array([pair_index[k] for k in zip(df["photo"], df["sketch"])], dtype=np.int64)
    kp = df["keypoint"].to_numpy(dtype=np.int64)
    slot = df.groupby([p_idx, kp], sort=False).cumcount().to_numpy()
    most = int(slot.max()) + 1 if len(slot) else 0
    n_slots = most if n_slots is None else int(n_slots)
    if most > n_slots:
        raise Psc6kError(f"a keypoint has {most} clicks but only {n_slots} annotator slots were asked for")
    points = np.full((len(pair_keys), n_slots, NUM_KEYPOINTS, 2), np.nan)
    points[p_idx, slot, kp, 0] = df["x"].to_numpy(dtype=np.float64)
    points[p_idx, slot, kp, 1] = df["y"].to_numpy(dtype=np.float64)
    return pair_keys, points


def method_points(annotations, submission) -> np.ndarray:
    """Photo positions a submission gives the sketch keypoints, float64 ``[N, 8, 2]`` pixels.

    Rows of annotated pairs the submission does not cover are NaN.
    """
    ann_idx, sub_idx = align_submission(submission, annotations, allow_partial=True)
    out = np.full((len(annotations), NUM_KEYPOINTS, 2), np.nan)
    if len(ann_idx) == 0:
        return out
    s2p = np.asarray(submission.sketch_to_photo, dtype=np.float64)[sub_idx]
    if submission.kind == "flow":
        out[ann_idx] = transfer_keypoints(s2p, annotations.sketch_kps[ann_idx])
    else:
        out[ann_idx] = s2p
    return out


def consistency_matrix(points: np.ndarray, image_size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mean point distance between systems, normalised by the image size.

    Parameters
    ----------
    points : float [M, ...,  2]
        Point ``(x, y)`` of each system at each of the same slots; NaN where a system has none.
    image_size : int

    Returns
    -------
    distance : float64 [M, M]
        ``mean ||p_a - p_b|| / image_size`` over slots both systems filled; NaN if none.
    counts : int64 [M, M]
        Number of such slots.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1, 2)
    valid = np.isfinite(pts).all(axis=-1)
    m = len(pts)
    distance = np.full((m, m), np.nan)
    counts = np.zeros((m, m), dtype=np.int64)
    for a in range(m):
        for b in range(a, m):
            both = valid[a] & valid[b]
            n = int(both.sum())
            counts[a, b] = counts[b, a] = n
            if n:
                d = np.linalg.norm(pts[a, both] - pts[b, both], axis=-1).mean() / image_size
                distance[a, b] = distance[b, a] = 0.0 if a == b else d
    return distance, counts


def compute_consistency(clicks, submissions=(), annotations=None, n_slots: int | None = None) -> ConsistencyResult:
    """Consistency of the annotator slots and the given methods.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Raw clicks.
    submissions : sequence of (name, Submission)
        Methods; need ``annotations`` (their sketch keypoints and pair order).
    annotations : psc6k.formats.Annotations, optional
    n_slots : int, optional
        Annotator slots (default: the most clicks any keypoint has).
    """
    submissions = list(submissions)
    if submissions and annotations is None:
        raise ParameterError("methods need `annotations` (the sketch keypoints they transfer)", param="annotations")
    pairs, slots = click_slots(clicks, n_slots)
    if not pairs:
        raise Psc6kError("the clicks file holds no clicks")
    systems = [slots[:, s] for s in range(slots.shape[1])]
    names = [f"annotator {s + 1}" for s in range(slots.shape[1])]
    if submissions:
        row_of = annotations.index()
        rows = np.array([row_of.get(p, -1) for p in pairs])
        if (rows < 0).all():
            raise Psc6kError("none of the clicked pairs is in the annotations; are they the same benchmark?")
        for name, sub in submissions:
            pts = method_points(annotations, sub)
            on_clicks = np.full((len(pairs), NUM_KEYPOINTS, 2), np.nan)
            on_clicks[rows >= 0] = pts[rows[rows >= 0]]
            systems.append(on_clicks)
            names.append(name)
    distance, counts = consistency_matrix(np.stack(systems))
    return ConsistencyResult(names, distance, counts, _human_agreement(clicks), len(pairs))


def _human_agreement(clicks) -> dict:
    """Human agreement PCK from the aggregation module (the one implementation)."""
    # scored on the inliers of the 3-sigma rule, the clicks the ground truth is built from
    result = human_agreement(clicks, kept=aggregate_clicks(clicks).kept)
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if isinstance(result, dict):
        return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)
                    if isinstance(v, (float, np.floating)) else v) for k, v in result.items()}
    return {"value": float(result)}


def write_consistency(result: ConsistencyResult, out_dir) -> dict[str, Path]:
    """Write ``consistency.csv`` (matrix), ``consistency.json`` and ``consistency.png`` (heatmap)."""
    import json

    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "consistency.csv", "json": out_dir / "consistency.json",
             "png": out_dir / "consistency.png"}
    table = pd.DataFrame(result.distance, index=list(result.names), columns=list(result.names))
    safe_frame(table).to_csv(paths["csv"], index_label="system", float_format="%.6f", lineterminator="\n")
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    plot_consistency(result, paths["png"])
    return paths


def plot_consistency(result: ConsistencyResult, path) -> None:
    """Heatmap of the consistency matrix with values written in the cells (like paper Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = len(result.names)
    size = max(4.0, 0.9 * m + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=100)
    data = np.ma.masked_invalid(result.distance)
    im = ax.imshow(data, cmap="viridis_r", vmin=0.0, vmax=max(float(np.nanmax(result.distance)), 1e-6)
                   if np.isfinite(result.distance).any() else 1.0)
    ax.set_xticks(range(m), result.names, rotation=35, ha="right")
    ax.set_yticks(range(m), result.names)
    vmax = im.get_clim()[1]
    for a in range(m):
        for b in range(m):
            v = result.distance[a, b]
            text = "–" if not np.isfinite(v) else f"{v:.3f}"
            ax.text(b, a, text, ha="center", va="center", fontsize=9,
                    color="white" if np.isfinite(v) and v > 0.55 * vmax else "black")
    n_humans = sum(name.startswith("annotator") for name in result.names)
    if 0 < n_humans < m:
        ax.axhline(n_humans - 0.5, color="white", lw=2)
        ax.axvline(n_humans - 0.5, color="white", lw=2)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"mean keypoint distance / {IMAGE_SIZE}")
    ax.set_title("Human-model consistency (lower = closer)")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)  # long method names stay whole
    plt.close(fig)
