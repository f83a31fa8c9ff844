"""Keypoint sampling on a sketch (SPEC §4, paper Appendix A.1).

The pipeline, one small function per step:

1. :func:`load_sketch` / :func:`to_gray` - any readable image (L, LA, RGB, RGBA, P, 16-bit, any
   size) to a float gray image in [0, 1]; transparent pixels count as white paper.
2. :func:`binarize` - dark strokes on light paper -> bool ink, robust to anti-aliasing
   (threshold half-way between the paper and the darkest ink level).
3. :func:`sketch_mask` - drop noise specks, fill the outermost contour; while the strokes form
   several components, dilate by one pixel (3 x 3) and fill again, at most ``max_dilations``
   times (the count is recorded in :class:`KeypointResult`).
4. :func:`pseudo_parts` - spectral clustering of a k-nearest-neighbour graph over the mask into
   ``k`` pseudo-parts, each connected.  For speed the graph is built over a grid subsample of the
   mask (one node per ``stride x stride`` cell, at the centroid of the cell's mask pixels; the
   stride is chosen from the mask area so that there are about ``n_samples`` nodes), edges whose
   midpoint leaves the mask are dropped so that affinity follows paths through the mask, and each
   mask pixel takes the label of the nearest node in its own or a neighbouring cell.  Parts are then made connected: every part keeps its
   largest connected piece and each stray piece joins the part it borders most.
5. :func:`part_keypoints` - one keypoint per part at its centroid.  Beyond the paper: when the
   centroid falls outside its (non-convex) part, it is moved to the part's pixel nearest to the
   centroid, so every keypoint lies on the object.

Keypoints are ``float64 [k, 2]`` as (x, y) = (column, row) in the input image's pixels, origin at
the centre of the top-left pixel (SPEC §3).  Parts, and so keypoints, are numbered in reading
order of their centroids (top to bottom, then left to right, on a coarse row grid) so that the
numbering does not depend on the clustering's arbitrary label order.

:func:`reference_pseudo_parts` is the naive reading of the paper (scikit-learn
``SpectralClustering(k, affinity="nearest_neighbors")`` over every mask pixel), kept as the
quality reference for tests and ``benchmarks/bench_keypoints.py``; it is ~20-40x slower.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from psc6k.errors import Psc6kError

__all__ = [
    "SketchError",
    "KeypointResult",
    "load_sketch",
    "to_gray",
    "binarize",
    "sketch_mask",
    "close_gaps",
    "pseudo_parts",
    "part_keypoints",
    "sample_keypoints",
    "analyze_sketch",
    "coverage_cost",
    "parts_connected",
    "reference_pseudo_parts",
]

#: 8-connectivity, used for strokes, masks and parts throughout.
_EIGHT = np.ones((3, 3), dtype=bool)


def _components(binary: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a bool image: (labels int32 [H, W] with 0 = background,
    number of components).  OpenCV's labelling, several times faster than ``ndimage.label``."""
    import cv2

    n, labels = cv2.connectedComponents(binary.view(np.uint8) if binary.dtype == bool
                                        else binary.astype(np.uint8), connectivity=connectivity)
    return labels, n - 1


class SketchError(Psc6kError):
    """A sketch image cannot be turned into keypoints.

    ``reason`` is a short code for summaries: ``"unreadable"``, ``"empty"``, ``"all_black"``,
    ``"not_connected"``, ``"too_small"``.
    """

    def __init__(self, message: str, *, reason: str, path=None):
        self.reason, self.path, self.detail = reason, path, message
        super().__init__(f"{path}: {message}" if path is not None else message)


@dataclass
class KeypointResult:
    """Everything :func:`analyze_sketch` computed for one sketch (for ``--viz`` and benchmarks).

    Attributes
    ----------
    gray : float32 [H, W]
        The sketch as gray levels in [0, 1] (1 = paper).
    ink : bool [H, W]
        Stroke pixels after binarisation and speck removal.
    mask : bool [H, W]
        Object mask (filled, possibly dilated strokes); one 8-connected component.
    parts : int [H, W]
        Pseudo-part label 0..k-1 inside the mask, -1 outside.
    keypoints : float64 [k, 2]
        (x, y) pixels, one per part, part ``i`` -> row ``i``.
    dilation_iterations : int
        3 x 3 dilations needed to connect the strokes (0 when the fill alone was one piece).
    stride : int
        Grid stride of the subsample the spectral clustering ran on (1 = every mask pixel).
    n_nodes : int
        Nodes of the k-nearest-neighbour graph.
    moved : bool [k]
        Which keypoints were moved from an outside centroid onto their part.
    """

    gray: np.ndarray
    ink: np.ndarray
    mask: np.ndarray
    parts: np.ndarray
    keypoints: np.ndarray
    dilation_iterations: int
    stride: int = 1
    n_nodes: int = 0
    moved: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


# --------------------------------------------------------------------------------------------
# 1-2. reading and binarising
# --------------------------------------------------------------------------------------------

def load_sketch(path) -> np.ndarray:
    """Read a sketch image file as float32 gray levels in [0, 1] (1 = white paper).

    Raises
    ------
    SketchError
        ``reason="unreadable"`` for a missing, unreadable, truncated or non-image file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes now: a truncated file raises here, not later
            return to_gray(_pil_to_array(im))
    except FileNotFoundError:
        raise SketchError("file not found", reason="unreadable", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SketchError(f"cannot read image ({exc})", reason="unreadable", path=path) from None


def _pil_to_array(im) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA")
    elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
    elif im.mode == "F":
        arr = arr.astype(np.float32)
        arr = arr / max(float(arr.max()), 1.0)
    return arr


def to_gray(image) -> np.ndarray:
    """Any image array to float32 gray levels in [0, 1] (1 = paper).

    Parameters
    ----------
    image : array [H, W], [H, W, 1], [H, W, 2] (L + alpha), [H, W, 3] (RGB) or [H, W, 4] (RGBA)
        uint8 / uint16 (scaled by their maximum), bool (True = paper) or float in [0, 1].
        Transparent pixels are composited over white paper.
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        gray = arr
    elif arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        c = arr.shape[2]
        color = arr[:, :, 0] if c <= 2 else arr[:, :, :3] @ np.float32([0.299, 0.587, 0.114])
        if c in (2, 4):
            alpha = arr[:, :, -1]
            color = alpha * color + (1.0 - alpha)
        gray = color
    else:
        raise SketchError(f"expected an image of shape [H, W] or [H, W, 1-4], got {arr.shape}",
                          reason="unreadable")
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        raise SketchError(f"image is {gray.shape[1]}x{gray.shape[0]} pixels; too small",
                          reason="too_small")
    if not np.all(np.isfinite(gray)):
        raise SketchError("image has non-finite values", reason="unreadable")
    return np.clip(gray, 0.0, 1.0).astype(np.float32, copy=False)


def binarize(image, *, min_contrast: float = 0.15, max_ink_fraction: float = 0.9) -> np.ndarray:
    """Stroke pixels of a sketch: dark strokes on light paper -> bool [H, W].

    The threshold is half-way between the paper level (90th percentile of gray) and the ink
    level (0.1th percentile), so anti-aliased grey edges split evenly and faint pencil-grey
    sketches still binarise.

    Raises
    ------
    SketchError
        ``"empty"`` when the image has no contrast and is light (blank paper), ``"all_black"``
        when it is uniformly dark or more than ``max_ink_fraction`` of it is ink.
    """
    gray = to_gray(image)
    paper = float(np.percentile(gray, 90))
    ink_level = float(np.percentile(gray, 0.1))
    if paper - ink_level < min_contrast:
        if paper >= 0.5:
            raise SketchError("the sketch is empty (no strokes darker than the paper)", reason="empty")
        raise SketchError("the image is all black; expected dark strokes on light paper",
                          reason="all_black")
    ink = gray < 0.5 * (paper + ink_level)
    if ink.mean() > max_ink_fraction:
        raise SketchError(f"{100 * ink.mean():.0f}% of the image is dark; expected dark strokes on "
                          "light paper (inverted image?)", reason="all_black")
    return ink


# --------------------------------------------------------------------------------------------
# 3. mask
# --------------------------------------------------------------------------------------------

def _default_max_dilations(shape) -> int:
    # Closes gaps up to ~12% of the image side (each dilation grows every stroke by 1 px).
    return max(4, int(round(0.0625 * max(shape))))


def _default_speck_area(shape) -> int:
    # A speck is an ink component smaller than this many pixels (3 px on a 256 x 256 sketch).
    return max(2, int(round(3 * shape[0] * shape[1] / 65536)))


def remove_specks(ink: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected ink components with fewer than ``min_area`` pixels (scanner dust, stray
    dots); if nothing would remain, keep the largest component."""
    labels, n = _components(ink)
    if n <= 1:
        return ink
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= min_area
    if not keep.any():
        keep[np.argmax(sizes)] = True
    keep[0] = False
    return keep[labels]


def _fill_holes(ink: np.ndarray) -> np.ndarray:
    """Fill everything the strokes enclose (the outermost contours, filled): background
    4-connected components that do not touch the border become object.  Same result as
    ``ndimage.binary_fill_holes`` with 8-connected strokes, an order of magnitude faster."""
    bg, n = _components(~ink, 4)  # 4-connected background
    if n == 0:
        return ink.copy()
    border = np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])
    outside = np.zeros(n + 1, dtype=bool)
    outside[border] = True
    outside[0] = False
    return ~outside[bg]


def _mask_from_ink(ink: np.ndarray, max_dilations: int) -> tuple[np.ndarray, int]:
    """Fill, dilate and refill until one component; returns (mask, iterations)."""
    filled = _fill_holes(ink)
    _, n = _components(filled)
    if n == 1:
        return filled, 0
    # n 3x3 dilations == Chebyshev distance to the ink <= n; one distance transform serves all.
    import cv2

    cheb = cv2.distanceTransform((~ink).astype(np.uint8), cv2.DIST_C, 3)
    for it in range(1, max_dilations + 1):
        filled = _fill_holes(cheb <= it)
        _, n = _components(filled)
        if n == 1:
            return filled, it
    raise SketchError(f"the strokes form {n} separate pieces even after {max_dilations} dilations; "
                      "cannot build one object mask (a larger --max-dilations / max_dilations may "
                      "connect them)", reason="not_connected")


def close_gaps(mask: np.ndarray, radius: int) -> np.ndarray:
    """Close outline gaps up to ~``2 * radius`` px: fill the mask dilated by ``radius`` (square),
    erode it back by ``radius`` and fill again (a morphological closing with a fill in the middle).

    Beyond the paper (off by default): the paper stops dilating once the strokes touch, which
    leaves an outline with a small gap unfilled when the pieces already touch elsewhere.  The
    result contains ``mask`` and is one component; notches narrower than ``2 * radius`` are
    filled too.
    """
    if radius <= 0:
        return mask
    import cv2

    r = int(radius)
    padded = np.pad(mask, r + 1).view(np.uint8)
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    grown = _fill_holes(cv2.dilate(padded, kernel).astype(bool))
    closed = _fill_holes(cv2.erode(grown.view(np.uint8), kernel).astype(bool) | padded.astype(bool))
    closed = closed[r + 1:-r - 1, r + 1:-r - 1]
    labels, n = _components(closed)
    if n > 1:  # erosion can leave islands of the filled interior: keep the mask's component
        closed = labels == labels[np.nonzero(mask)][0]
    return closed


def sketch_mask(image, *, max_dilations: int | None = None, min_speck_area: int | None = None,
                close_gaps_px: int = 0, return_iterations: bool = False):
    """Object mask of a sketch (paper Appendix A.1).

    Parameters
    ----------
    image : array [H, W] or [H, W, C]
        The sketch (see :func:`to_gray`); a bool array is taken as the ink itself
        (True = stroke).
    max_dilations : int, optional
        Bound on 3 x 3 dilations used to connect the strokes; default ~6% of the image side
        (16 for 256 x 256).
    min_speck_area : int, optional
        Ink components smaller than this are noise and dropped first; default 3 px per 256 x 256.
    close_gaps_px : int
        Beyond the paper, off by default: also close outline gaps up to about twice this many
        pixels (see :func:`close_gaps`).
    return_iterations : bool
        Also return the number of dilations used.

    Returns
    -------
    mask : bool [H, W]
        One 8-connected component.
    iterations : int
        Only when ``return_iterations``.
    """
    _, mask, it = _ink_to_mask(_ink_of(image), max_dilations, min_speck_area, close_gaps_px)
    return (mask, it) if return_iterations else mask


def _ink_to_mask(ink, max_dilations, min_speck_area, close_gaps_px):
    """Specks removed -> contour filling with iterative dilation -> optional gap closing.
    Returns (cleaned ink, mask, dilations used); shared by :func:`sketch_mask` and
    :func:`analyze_sketch`."""
    shape = ink.shape
    max_dilations = _default_max_dilations(shape) if max_dilations is None else int(max_dilations)
    min_speck_area = _default_speck_area(shape) if min_speck_area is None else int(min_speck_area)
    ink = remove_specks(ink, min_speck_area)
    mask, iterations = _mask_from_ink(ink, max_dilations)
    return ink, close_gaps(mask, close_gaps_px), iterations


def _ink_of(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype == bool and arr.ndim == 2:
        if not arr.any():
            raise SketchError("the sketch is empty (no strokes)", reason="empty")
        if arr.all():
            raise SketchError("the image is all ink; expected strokes on paper", reason="all_black")
        return arr
    return binarize(arr)


# --------------------------------------------------------------------------------------------
# 4. pseudo-parts
# --------------------------------------------------------------------------------------------

_CONTROLLER = None


def _one_blas_thread():
    """Context limiting BLAS to one thread for this call only (restored on exit)."""
    global _CONTROLLER
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unusable: run as is
        return contextlib.nullcontext()


@contextlib.contextmanager
def single_threaded():
    """Run the enclosed code with one BLAS thread and one OpenCV thread, restored on exit.

    The arrays of one sketch are small (a 256 x 256 image, a few hundred graph nodes): thread
    pools only add start-up and contention, badly so on a loaded machine or with several worker
    processes (measured: 4x the CPU time for the same wall time on a 16-core machine).  Nothing
    is changed globally beyond the ``with`` block.
    """
    import cv2

    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with _one_blas_thread():
            yield
    finally:
        cv2.setNumThreads(old)


def _dilate1(binary: np.ndarray) -> np.ndarray:
    """3 x 3 dilation of a bool image (OpenCV; ~10x faster than ndimage here)."""
    import cv2

    return cv2.dilate(binary.view(np.uint8), _EIGHT.view(np.uint8)).view(bool)


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
    uniq, pixel_node = np.unique(cell, return_inverse=True)
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
    best = pixel_node[sel].copy()
    best_d = (xy[best, 0] - c) ** 2 + (xy[best, 1] - r) ** 2
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            cand = grid[pr + dr, pc + dc]
            ok = cand >= 0
            cand_ok = cand[ok]
            d = (xy[cand_ok, 0] - c[ok]) ** 2 + (xy[cand_ok, 1] - r[ok]) ** 2
            better = d < best_d[ok]
            idx = np.nonzero(ok)[0][better]
            best[idx] = cand_ok[better]
            best_d[idx] = d[better]
    labels[sel] = node_label[best]
    return labels


def _knn_affinity(xy: np.ndarray, n_neighbors: int, inside=None) -> sparse.csr_matrix:
    """Symmetric 0/1 kNN connectivity, 0.5 * (A + A.T) as scikit-learn builds it (self loops
    included); edges whose midpoint is outside ``inside`` (bool image) are dropped unless that
    disconnects the graph."""
    n = xy.shape[0]
    kq = min(n_neighbors, n)
    _, idx = cKDTree(xy).query(xy, k=kq)
    src = np.repeat(np.arange(n), kq)
    dst = idx.ravel()

    def build(sel):
        s_, d_ = (src, dst) if sel is None else (src[sel], dst[sel])
        # A + A.T in one COO -> CSR conversion (duplicates are summed)
        data = np.full(2 * s_.size, 0.5)
        return sparse.csr_matrix((data, (np.concatenate([s_, d_]), np.concatenate([d_, s_]))), shape=(n, n))

    if inside is not None:
        mid = 0.5 * (xy[src] + xy[dst])
        mr = np.clip(np.rint(mid[:, 1]).astype(np.intp), 0, inside.shape[0] - 1)
        mc = np.clip(np.rint(mid[:, 0]).astype(np.intp), 0, inside.shape[1] - 1)
        ok = inside[mr, mc] | (src == dst)
        if not ok.all():
            aff = build(ok)
            if csgraph.connected_components(aff, directed=False)[0] == 1:
                return aff
    return build(None)


def _spectral_embedding(aff: sparse.csr_matrix, k: int, seed: int) -> np.ndarray:
    """The k smallest eigenvectors of the normalised Laplacian, scaled by D^-1/2 (as
    scikit-learn's ``spectral_embedding`` with ``drop_first=False``), sign-fixed; float64 [n, k].

    Shift-invert Lanczos: one sparse LU of ``L + 1e-3 I`` and ARPACK on its inverse (the
    smallest eigenvalues of L become the largest), started from a seeded vector.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh, splu

    n = aff.shape[0]
    lap, dd = csgraph.laplacian(aff, normed=True, return_diag=True)
    if n <= 3 * k + 20:
        _, vecs = np.linalg.eigh(np.asarray(sparse.csr_matrix(lap).toarray()))
        vecs = vecs[:, :k]
    else:
        shift = 1e-3
        lu = splu(sparse.csc_matrix(lap + shift * sparse.identity(n, format="csc")))
        op = LinearOperator((n, n), matvec=lu.solve, dtype=np.float64)
        v0 = np.random.RandomState(seed).uniform(-1, 1, n)
        vals, vecs = eigsh(op, k=k, which="LM", v0=v0, tol=1e-6)
        vecs = vecs[:, np.argsort(-vals)]  # largest of the inverse = smallest of L
    emb = vecs / dd[:, None]
    # deterministic sign: largest-magnitude entry of each vector positive
    sign = np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(emb.shape[1])])
    sign[sign == 0] = 1
    return emb * sign


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 5, max_iter: int = 100) -> np.ndarray:
    """Seeded k-means: k-means++ initialisation, Lloyd iterations, lowest inertia of ``n_init``
    runs.  The runs advance together as one batched NumPy computation, ~10x faster than
    scikit-learn's per-run overhead on a few hundred points (5 runs, not scikit-learn's 10: on
    the benchmark sketches the coverage cost is the same to 0.1%).  Returns labels int [n]."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    sq = np.einsum("ij,ij->i", x, x)
    runs = np.arange(n_init)
    # k-means++ (one candidate per step), all runs at once
    centers = np.empty((n_init, k, d))
    centers[:, 0] = x[rng.integers(0, n, n_init)]
    d2 = np.maximum(sq[None, :] - 2 * centers[:, 0] @ x.T + np.einsum("ij,ij->i", centers[:, 0], centers[:, 0])[:, None], 0)
    for j in range(1, k):
        cum = np.cumsum(d2, axis=1)
        target = rng.random(n_init) * cum[:, -1]
        idx = np.minimum((cum <= target[:, None]).sum(axis=1), n - 1)
        centers[:, j] = x[idx]
        dj = sq[None, :] - 2 * centers[:, j] @ x.T + np.einsum("ij,ij->i", centers[:, j], centers[:, j])[:, None]
        d2 = np.minimum(d2, np.maximum(dj, 0))
    tol = 1e-4 * float(np.mean(np.var(x, axis=0)))  # scikit-learn's stopping tolerance
    eye = np.eye(k)
    flat_base = (runs * k)[:, None]
    xt = np.ascontiguousarray(x.T)

    def assign(centers):
        # squared distances [n_init, k, n]; an explicit running argmin over the k rows is
        # several times faster than argmin along a short last axis
        # (|x|^2 is the same for every centre: added back only for the inertia)
        dist = centers @ xt
        dist *= -2.0
        dist += np.einsum("ikd,ikd->ik", centers, centers)[:, :, None]
        best = dist[:, 0].copy()
        lab = np.zeros(best.shape, dtype=np.intp)
        for j in range(1, k):
            closer = dist[:, j] < best
            best = np.where(closer, dist[:, j], best)
            lab[closer] = j
        return lab, best + sq

    labels, best = assign(centers)
    for _ in range(max_iter):
        cnt = np.bincount((flat_base + labels).ravel(), minlength=n_init * k).reshape(n_init, k)
        for r, j in zip(*np.nonzero(cnt == 0)):  # empty cluster: move the worst-fit point there
            worst = int(np.argmax(best[r]))
            labels[r, worst] = j
            best[r, worst] = 0.0
            cnt[r] = np.bincount(labels[r], minlength=k)
        new_centers = (eye[labels].transpose(0, 2, 1) @ x) / cnt[:, :, None]
        shift = float(((new_centers - centers) ** 2).sum(axis=(1, 2)).max())
        centers = new_centers
        new, best = assign(centers)
        if np.array_equal(new, labels) or shift <= tol:
            labels = new
            break
        labels = new
    inertia = np.maximum(best, 0).sum(axis=1)
    return labels[int(np.argmin(inertia))]


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
        comp, n = _components(sub == lab)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            sub[(comp > 0) & (comp != np.argmax(sizes))] = -2
    orphans = parts == -2
    if not orphans.any():
        return parts
    comp, n = _components(orphans)
    objs = ndimage.find_objects(comp)
    h, w = parts.shape
    for i, sl in enumerate(objs, start=1):
        r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        win = comp[r0:r1, c0:c1] == i
        ring = _dilate1(win) & ~win
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


def _reading_order(parts: np.ndarray, k: int) -> np.ndarray:
    """Relabel parts in reading order of their centroids (rows of 1/8 image height)."""
    rows, cols = np.nonzero(parts >= 0)
    lab = parts[rows, cols]
    cnt = np.bincount(lab, minlength=k).astype(np.float64)
    cy = np.bincount(lab, rows, minlength=k) / np.maximum(cnt, 1)
    cx = np.bincount(lab, cols, minlength=k) / np.maximum(cnt, 1)
    band = np.floor(cy / max(parts.shape[0] / 8.0, 1.0))
    order = np.lexsort((cx, band))  # primary: band, secondary: x
    new = np.empty(k, dtype=np.intp)
    new[order] = np.arange(k)
    out = parts.copy()
    out[rows, cols] = new[lab]
    return out


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
    n_pieces = _components(mask)[1]
    if n_pieces != 1:
        raise SketchError(f"the mask has {n_pieces} separate pieces; pseudo-parts need one 8-connected "
                          "mask (see sketch_mask)", reason="not_connected")
    stride = _stride_for(area, n_samples)
    xy, pixel_node, rows, cols = _grid_nodes(mask, stride)
    while xy.shape[0] < 4 * k and stride > 1:  # thin masks: make sure there are enough nodes
        stride -= 1
        xy, pixel_node, rows, cols = _grid_nodes(mask, stride)
    inside = _dilate1(mask) if stride > 1 else mask
    aff = _knn_affinity(xy, n_neighbors, inside=inside)
    with _one_blas_thread():  # cheap to re-enter; pseudo_parts may be called on its own
        emb = _spectral_embedding(aff, k, seed)
        node_label = _kmeans(emb, k, seed)
    parts = np.full(mask.shape, -1, dtype=np.intp)
    if stride > 1:
        parts[rows, cols] = _pixel_labels(rows, cols, stride, xy, pixel_node, node_label)
    else:
        parts[rows, cols] = node_label[pixel_node]
    parts = _ensure_k_parts(parts, k)
    parts = _make_parts_connected(parts, k)
    full = np.full(full_shape, -1, dtype=np.intp)
    full[r0:r1, c0:c1] = parts
    parts = _reading_order(full, k)
    if return_info:
        return parts, {"stride": stride, "n_nodes": int(xy.shape[0])}
    return parts


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


# --------------------------------------------------------------------------------------------
# 5. keypoints
# --------------------------------------------------------------------------------------------

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
    lab = parts[rows, cols]
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
    return (kps, moved) if return_moved else kps


def analyze_sketch(image, k: int = 8, seed: int = 0, *, max_dilations: int | None = None,
                   min_speck_area: int | None = None, close_gaps_px: int = 0,
                   n_samples: int = 300) -> KeypointResult:
    """Run the whole A.1 pipeline on one sketch and keep every intermediate.

    Parameters
    ----------
    image : array or path
        Sketch image (array, see :func:`to_gray`) or a file path (read by :func:`load_sketch`).
    k, seed :
        As in :func:`pseudo_parts`.
    max_dilations, min_speck_area, close_gaps_px :
        As in :func:`sketch_mask`.
    n_samples :
        As in :func:`pseudo_parts`.
    """
    if isinstance(image, (str, os.PathLike)):
        gray = load_sketch(image)
    else:
        arr = np.asarray(image)
        gray = to_gray(arr) if arr.dtype != bool else (~arr).astype(np.float32)
    with single_threaded():
        ink, mask, iterations = _ink_to_mask(binarize(gray), max_dilations, min_speck_area, close_gaps_px)
        parts, info = pseudo_parts(mask, k, seed, n_samples=n_samples, return_info=True)
        kps, moved = part_keypoints(parts, k, return_moved=True)
    return KeypointResult(gray=gray, ink=ink, mask=mask, parts=parts, keypoints=kps,
                          dilation_iterations=iterations, stride=info["stride"],
                          n_nodes=info["n_nodes"], moved=moved)


def sample_keypoints(image, k: int = 8, seed: int = 0) -> np.ndarray:
    """``k`` keypoints of a sketch (SPEC §4 A.1): mask, spectral pseudo-parts, centroids.

    Parameters
    ----------
    image : array [H, W] / [H, W, C] or path
        Dark strokes on light paper; any size; uint8, uint16 or float in [0, 1].
    k : int
        Number of keypoints (8 in PSC6K).
    seed : int
        Same image and seed -> same keypoints.

    Returns
    -------
    float64 [k, 2]
        (x, y) in the image's pixels (x = column, y = row), every point on the object mask.

    Raises
    ------
    SketchError
        Empty, all-black or unreadable image, or strokes that cannot be connected.
    """
    return analyze_sketch(image, k, seed).keypoints


# --------------------------------------------------------------------------------------------
# quality measures and the naive reference
# --------------------------------------------------------------------------------------------

def coverage_cost(mask: np.ndarray, keypoints: np.ndarray) -> float:
    """Mean Euclidean distance (px) from each mask pixel to its nearest keypoint."""
    rows, cols = np.nonzero(mask)
    d, _ = cKDTree(np.asarray(keypoints, dtype=np.float64)).query(np.column_stack([cols, rows]))
    return float(d.mean())


def parts_connected(parts: np.ndarray, k: int | None = None) -> bool:
    """True when each label 0..k-1 is present and forms one 8-connected component."""
    k = int(parts.max()) + 1 if k is None else int(k)
    for lab in range(k):
        _, n = _components(parts == lab)
        if n != 1:
            return False
    return True


def reference_pseudo_parts(mask: np.ndarray, k: int = 8, seed: int = 0) -> np.ndarray:
    """The naive reading of A.1: ``SpectralClustering(k, affinity="nearest_neighbors")`` over
    every mask pixel, labels as returned (no connectivity repair).  Slow (~0.75 s for a 21k-pixel
    mask); the reference for tests and benchmarks only.  Runs with one BLAS and one OpenMP thread,
    like the fast path (scikit-learn's OpenMP k-means collapses on a shared, loaded machine)."""
    from sklearn.cluster import SpectralClustering
    from threadpoolctl import threadpool_limits

    rows, cols = np.nonzero(mask)
    xy = np.column_stack([cols, rows]).astype(np.float64)
    with threadpool_limits(1):
        labels = SpectralClustering(k, affinity="nearest_neighbors", random_state=seed).fit_predict(xy)
    parts = np.full(mask.shape, -1, dtype=np.intp)
    parts[rows, cols] = labels
    return parts
