"""Pseudo-parts of an object mask and their keypoints (paper Appendix A.1).

:func:`pseudo_parts` splits a mask into ``k`` connected parts by spectral clustering of a
k-nearest-neighbour graph (:mod:`psc6k.keypoints.spectral`).  For speed the graph is built over
a grid subsample of the mask — one node per ``stride x stride`` cell, at the centroid of the
cell's mask pixels, the stride chosen from the mask area so that there are about ``n_samples``
nodes — and each mask pixel takes the label of the nearest node in its own or a neighbouring
cell.  Parts are then made connected (every part keeps its largest piece; each stray piece
joins the part it borders most) and numbered in reading order of their centroids, so the
numbering does not depend on the clustering's arbitrary label order.

:func:`part_keypoints` puts one keypoint per part at its centroid.  Beyond the paper: a
centroid outside its (non-convex) part is moved to the part's pixel nearest to it, so every
keypoint lies on the object.

Parts are int ``[H, W]``: -1 outside the mask, 0..k-1 inside.  Keypoints are float64
``[k, 2]`` as (x, y) = (column, row) pixels, origin at the centre of the top-left pixel
(SPEC §3).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from psc6k.keypoints._morphology import components, dilate1, single_threaded
from psc6k.keypoints.errors import SketchError
from psc6k.keypoints.spectral import cluster_embedding, knn_affinity, spectral_embedding

__all__ = ["pseudo_parts", "part_keypoints"]


def pseudo_parts(mask, k: int = 8, seed: int = 0, *, n_samples: int = 300, n_neighbors: int = 10,
                 return_info: bool = False):
    """Split a mask into ``k`` connected pseudo-parts by spectral clustering (paper A.1).

    Parameters
    ----------
    mask : bool [H, W]
        Object mask, one 8-connected component (see :func:`sketch_mask`).
    k : int
        Number of parts.
    seed : int
        Seeds the eigen-solver start vector and k-means; same seed, same parts.
    n_samples : int
        About how many graph nodes to cluster (grid subsample of the mask); the stride is
        ``floor(sqrt(area / n_samples))``. A large value (>= area) clusters every pixel.
    n_neighbors : int
        k of the k-nearest-neighbour graph (10, scikit-learn's default).
    return_info : bool
        Also return ``{"stride": int, "n_nodes": int}``.

    Returns
    -------
    parts : int [H, W]
        -1 outside the mask, 0..k-1 inside; each part non-empty and 8-connected, numbered in
        reading order of the centroids.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    area = int(mask.sum())
    if area < 4 * k:
        raise SketchError(f"the mask has {area} pixels; need at least {4 * k} for {k} parts",
                          reason="too_small")
    # work on the mask's bounding box (+1 px) only; paste back at the end
    full_shape = mask.shape
    rr, cc = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    r0, r1 = max(rr[0] - 1, 0), min(rr[-1] + 2, full_shape[0])
    c0, c1 = max(cc[0] - 1, 0), min(cc[-1] + 2, full_shape[1])
    mask = mask[r0:r1, c0:c1]
    n_pieces = components(mask)[1]
    if n_pieces != 1:
        raise SketchError(f"the mask has {n_pieces} separate pieces; pseudo-parts need one 8-connected "
                          "mask (see sketch_mask)", reason="not_connected")
    stride = _stride_for(area, n_samples)
    xy, pixel_node, rows, cols = _grid_nodes(mask, stride)
    while xy.shape[0] < 4 * k and stride > 1:  # thin masks: make sure there are enough nodes
        stride -= 1
        xy, pixel_node, rows, cols = _grid_nodes(mask, stride)
    inside = dilate1(mask) if stride > 1 else mask
    aff = knn_affinity(xy, n_neighbors, inside=inside)
    with single_threaded():  # cheap to re-enter; pseudo_parts may be called on its own
        emb = spectral_embedding(aff, k, seed)
        node_label = cluster_embedding(emb, k, seed)
    parts = np.full(mask.shape, -1, dtype=np.intp)
    if stride > 1:
        parts[rows, cols] = _pixel_labels(rows, cols, stride, xy, pixel_node, node_label)
    else:
        parts[rows, cols] = node_label[pixel_node]
    parts = _ensure_k_parts(parts, k)
    parts = _make_parts_connected(parts, k)
    # every mask pixel is labelled now: renumber and paste back, pixel by pixel
    rows, cols = rows + r0, cols + c0
    labels = _reading_order(parts[rows - r0, cols - c0], rows, cols, full_shape[0], k)
    full = np.full(full_shape, -1, dtype=np.intp)
    full[rows, cols] = labels
    if return_info:
        return full, {"stride": stride, "n_nodes": int(xy.shape[0]), "pixels": (rows, cols, labels)}
    return full


def _ensure_k_parts(parts: np.ndarray, k: int) -> np.ndarray:
    """A part lost in propagation (possible for tiny clusters) is re-seeded by splitting off the
    far half of the largest part, so that there are always ``k`` parts."""
    counts = np.bincount(parts[parts >= 0], minlength=k)
    for lab in np.nonzero(counts == 0)[0]:
        big = int(np.argmax(counts))
        r, c = np.nonzero(parts == big)
        cy, cx = r.mean(), c.mean()
        d = np.hypot(r - cy, c - cx)
        far = d >= np.median(d)
        parts[r[far], c[far]] = lab
        counts = np.bincount(parts[parts >= 0], minlength=k)
    return parts



def _stride_for(n_pixels: int, n_samples: int) -> int:
    return max(1, int(np.floor(np.sqrt(n_pixels / float(n_samples)))))


def _grid_nodes(mask: np.ndarray, stride: int):
    """One node per occupied ``stride x stride`` cell at the centroid of its mask pixels.

    Returns (node_xy float [n, 2], pixel_node int [n_pixels], rows, cols of the mask pixels).
    """
    rows, cols = np.nonzero(mask)
    if stride == 1:
        return np.column_stack([cols, rows]).astype(np.float64), np.arange(rows.size), rows, cols
    ncol_cells = mask.shape[1] // stride + 1
    cell = (rows // stride) * ncol_cells + (cols // stride)
    # nodes numbered in cell order (as np.unique would, without its sort)
    node_of_cell = np.cumsum(np.bincount(cell) > 0) - 1
    pixel_node = node_of_cell[cell]
    count = np.bincount(pixel_node).astype(np.float64)
    xy = np.column_stack([np.bincount(pixel_node, cols) / count, np.bincount(pixel_node, rows) / count])
    return xy, pixel_node, rows, cols


def _pixel_labels(rows, cols, stride: int, xy: np.ndarray, pixel_node: np.ndarray,
                  node_label: np.ndarray) -> np.ndarray:
    """Label of each mask pixel: that of the node (cell centroid) nearest to it among the nodes of
    its own and the 8 neighbouring cells.  This turns the blocky cell borders of the parts into
    smooth (Voronoi) ones.  Only pixels of cells next to a differently labelled cell can change,
    so only those are searched."""
    ncol_cells = int(cols.max()) // stride + 1
    nrow_cells = int(rows.max()) // stride + 1
    pr, pc = rows // stride + 1, cols // stride + 1
    grid = np.full((nrow_cells + 2, ncol_cells + 2), -1, dtype=np.intp)
    grid[pr, pc] = pixel_node
    lab_grid = np.where(grid >= 0, node_label[grid], -1)
    core = lab_grid[1:-1, 1:-1]
    border = np.zeros(core.shape, dtype=bool)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            nb = lab_grid[dr:dr + core.shape[0], dc:dc + core.shape[1]]
            border |= (nb >= 0) & (nb != core)
    labels = node_label[pixel_node]
    sel = np.nonzero(border[pr - 1, pc - 1])[0]
    if sel.size == 0:
        return labels
    r, c, pr, pc = rows[sel], cols[sel], pr[sel], pc[sel]
    # the own cell first, then the 8 neighbours, a strictly nearer node replacing the best so
    # far; an empty cell (-1) reads the sentinel node at infinity appended to the coordinates
    nx, ny = np.append(xy[:, 0], np.inf), np.append(xy[:, 1], np.inf)
    best = pixel_node[sel]
    best_d = (nx[best] - c) ** 2 + (ny[best] - r) ** 2
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            cand = grid[pr + dr, pc + dc]
            d = (nx[cand] - c) ** 2 + (ny[cand] - r) ** 2
            best = np.where(d < best_d, cand, best)
            best_d = np.minimum(d, best_d)
    labels[sel] = node_label[best]
    return labels


def _make_parts_connected(parts: np.ndarray, k: int) -> np.ndarray:
    """Each part keeps its largest 8-connected piece; every other piece joins the neighbouring
    part it shares most border with.  A piece always borders some kept part (the mask is one
    component), and joining a piece to a part it touches keeps that part connected, so one pass
    suffices."""
    parts = parts.copy()
    boxes = ndimage.find_objects(parts + 1, max_label=k)
    for lab, box in enumerate(boxes):
        if box is None:
            continue
        sub = parts[box]
        comp, n = components(sub == lab)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            sub[(comp > 0) & (comp != np.argmax(sizes))] = -2
    orphans = parts == -2
    if not orphans.any():
        return parts
    comp, n = components(orphans)
    objs = ndimage.find_objects(comp)
    h, w = parts.shape
    for i, sl in enumerate(objs, start=1):
        r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        win = comp[r0:r1, c0:c1] == i
        ring = dilate1(win) & ~win
        neigh = parts[r0:r1, c0:c1][ring]
        neigh = neigh[neigh >= 0]
        if neigh.size == 0:  # borders only other stray pieces: handled below
            continue
        target = np.bincount(neigh, minlength=k).argmax()
        parts[r0:r1, c0:c1][win] = target
    if (parts == -2).any():  # stray pieces bordering only other stray pieces: repeat (rare)
        return _make_parts_connected(np.where(parts == -2, _nearest_label(parts), parts), k)
    return parts


def _nearest_label(parts: np.ndarray) -> np.ndarray:
    """Label of the nearest labelled (>= 0) pixel, for every pixel."""
    _, (ri, ci) = ndimage.distance_transform_edt(parts < 0, return_indices=True)
    return parts[ri, ci]


def _reading_order(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int, k: int) -> np.ndarray:
    """New labels of the pixels ``(rows, cols)`` labelled ``labels``: parts numbered in reading
    order of their centroids (rows of 1/8 of the image ``height``, then left to right)."""
    cnt = np.bincount(labels, minlength=k).astype(np.float64)
    cy = np.bincount(labels, rows, minlength=k) / np.maximum(cnt, 1)
    cx = np.bincount(labels, cols, minlength=k) / np.maximum(cnt, 1)
    band = np.floor(cy / max(height / 8.0, 1.0))
    order = np.lexsort((cx, band))  # primary: band, secondary: x
    new = np.empty(k, dtype=np.intp)
    new[order] = np.arange(k)
    return new[labels]


def part_keypoints(parts: np.ndarray, k: int | None = None, *, return_moved: bool = False):
    """One keypoint per part at its centroid, moved onto the part when it falls outside.

    Parameters
    ----------
    parts : int [H, W]
        -1 outside, 0..k-1 inside.
    k : int, optional
        Number of parts (default ``parts.max() + 1``).

    Returns
    -------
    keypoints : float64 [k, 2]
        (x, y) pixels.  A centroid whose nearest pixel is not in its part is replaced by the
        part pixel nearest to the centroid (ties: first in row-major order).
    moved : bool [k]
        Only when ``return_moved``.
    """
    parts = np.asarray(parts)
    k = int(parts.max()) + 1 if k is None else int(k)
    rows, cols = np.nonzero(parts >= 0)
    kps, moved = _centroid_keypoints(parts, rows, cols, parts[rows, cols], k)
    return (kps, moved) if return_moved else kps


def _centroid_keypoints(parts, rows, cols, lab, k):
    """:func:`part_keypoints` from the labelled pixels ``(rows, cols)`` (raster order) and their
    labels ``lab``, as :func:`pseudo_parts` returns them with ``return_info``."""
    cnt = np.bincount(lab, minlength=k).astype(np.float64)
    if (cnt == 0).any():
        raise ValueError(f"part(s) {np.nonzero(cnt == 0)[0].tolist()} are empty")
    cx = np.bincount(lab, cols, minlength=k) / cnt
    cy = np.bincount(lab, rows, minlength=k) / cnt
    kps = np.column_stack([cx, cy]).astype(np.float64)
    moved = np.zeros(k, dtype=bool)
    h, w = parts.shape
    for i in range(k):
        ri = min(max(int(np.rint(cy[i])), 0), h - 1)
        ci = min(max(int(np.rint(cx[i])), 0), w - 1)
        if parts[ri, ci] != i:
            sel = lab == i
            d2 = (cols[sel] - cx[i]) ** 2 + (rows[sel] - cy[i]) ** 2
            j = int(np.argmin(d2))
            kps[i] = (cols[sel][j], rows[sel][j])
            moved[i] = True
    return kps, moved
