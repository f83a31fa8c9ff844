"""Quality measures of pseudo-parts and keypoints, and the naive reading of the paper.

:func:`reference_pseudo_parts` is the literal reading of Appendix A.1 (scikit-learn
``SpectralClustering(k, affinity="nearest_neighbors")`` over every mask pixel), kept as the
quality reference of the tests and ``benchmarks/bench_keypoints.py``; it is ~20-40x slower
than :func:`psc6k.keypoints.pseudo_parts`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from psc6k.keypoints._morphology import n_components

__all__ = ["coverage_cost", "parts_connected", "n_parts_connected", "reference_pseudo_parts"]


def coverage_cost(mask: np.ndarray, keypoints: np.ndarray) -> float:
    """Mean Euclidean distance (px) from each mask pixel to its nearest keypoint (lower is
    better); ``mask`` bool [H, W], ``keypoints`` float [k, 2] as (x, y)."""
    rows, cols = np.nonzero(mask)
    d, _ = cKDTree(np.asarray(keypoints, dtype=np.float64)).query(np.column_stack([cols, rows]))
    return float(d.mean())


def n_parts_connected(parts: np.ndarray, k: int | None = None) -> int:
    """How many of the labels 0..k-1 are present and form one 8-connected component (each
    labelled within its bounding box)."""
    from scipy import ndimage

    k = int(parts.max()) + 1 if k is None else int(k)
    boxes = ndimage.find_objects(np.asarray(parts) + 1, max_label=k)
    return sum(box is not None and n_components(parts[box] == lab) == 1 for lab, box in enumerate(boxes))


def parts_connected(parts: np.ndarray, k: int | None = None) -> bool:
    """True when each label 0..k-1 is present and forms one 8-connected component."""
    k = int(parts.max()) + 1 if k is None else int(k)
    return n_parts_connected(parts, k) == k


def reference_pseudo_parts(mask: np.ndarray, k: int = 8, seed: int = 0) -> np.ndarray:
    """The naive reading of A.1: ``SpectralClustering(k, affinity="nearest_neighbors")`` over
    every mask pixel, labels as returned (no connectivity repair), int [H, W] with -1 outside.
    Slow (~0.75 s for a 21k-pixel mask).  Runs with one BLAS and one OpenMP thread, like the
    fast path (scikit-learn's OpenMP k-means collapses on a shared, loaded machine)."""
    from sklearn.cluster import SpectralClustering
    from threadpoolctl import threadpool_limits

    rows, cols = np.nonzero(mask)
    xy = np.column_stack([cols, rows]).astype(np.float64)
    with threadpool_limits(1):
        labels = SpectralClustering(k, affinity="nearest_neighbors", random_state=seed).fit_predict(xy)
    parts = np.full(mask.shape, -1, dtype=np.intp)
    parts[rows, cols] = labels
    return parts
