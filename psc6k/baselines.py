"""Classical photo-sketch correspondence baselines (no torch): identity, affine and dense.

Every baseline returns flows in the SPEC §5 convention: an ``[H, W, 2]`` array on the source
grid whose entry ``[i, j]`` is the normalised ``(u, v)`` position in the target image where the
source pixel lands (``grid_sample`` with ``align_corners=True``; pixel ``x = (u + 1) * 255 / 2``).
Flows are stored at a reduced resolution (the scorer upsamples them bilinearly with
``align_corners=True``), so grid point ``k`` of an ``S``-point axis sits at pixel ``k * 255 / (S - 1)``.

- ``identity``: every pixel maps to itself.
- ``affine``: the object in the photo (GrabCut, seeded by the sketch's filled outline, since
  Sketchy sketches are drawn roughly over the photo's layout) and the sketch's filled mask are
  aligned by their first and second moments (centroid and per-axis spread; no rotation, because
  Sketchy's sketches are upright like their photos).
- ``dense``: OpenCV DIS optical flow (multi-scale, coarse to fine) between *structure maps* of
  the two images (a decaying distance transform of the photo object's edges and of the sketch's
  strokes), initialised by the affine: photo and sketch become comparable images, and the flow
  only has to explain the residual, smooth deformation.

All images are 256 x 256 (:data:`psc6k.IMAGE_SIZE`), read by :func:`psc6k.images.read_image`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.errors import Psc6kError
from psc6k.images import read_image
from psc6k.keypoints import binarize, sketch_mask
from psc6k.pck import pixels_to_flow
from psc6k.submission import Submission
from psc6k.submission import identity_flow

#: Names accepted by :func:`run_baseline` and ``psc6k baseline``.
BASELINES: tuple[str, ...] = ("identity", "affine", "dense")
#: Flow side used for the linear baselines (exact: bilinear upsampling reproduces affine maps).
LINEAR_FLOW_SIZE = 16
#: Flow side used for the dense baseline (64 x 64 keeps a submission of 6,250 pairs ~400 MB
#: smaller than full resolution while the upsampling error stays well under a pixel).
DENSE_FLOW_SIZE = 64
#: Scale (pixels) of the decaying distance transform in the structure maps.
STRUCTURE_SCALE_PX = 12.0


# --------------------------------------------------------------------------------------------
# coordinates
# --------------------------------------------------------------------------------------------

def grid_pixels(size: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixel coordinates of the points of a ``size`` x ``size`` flow grid (align_corners=True).

    Returns
    -------
    ndarray, float64 [size, size, 2]
        ``(x, y)`` pixels of grid point ``[i, j]``: ``x = j * (image_size - 1) / (size - 1)``.
    """
    if size < 2:
        raise ValueError("a flow grid needs at least 2 points per side")
    axis = np.arange(size, dtype=np.float64) * (image_size - 1) / (size - 1)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx, yy], axis=-1)


def affine_flow(matrix: np.ndarray, size: int = LINEAR_FLOW_SIZE) -> np.ndarray:
    """Flow of the affine map ``matrix`` (2 x 3, source pixels -> target pixels).

    Returns
    -------
    ndarray, float32 [size, size, 2]
        On the source grid, normalised target coordinates.
    """
    pts = grid_pixels(size)
    mapped = pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix)[:, 2]
    return pixels_to_flow(mapped).astype(np.float32)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2 x 3 affine map."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# masks and moments
# --------------------------------------------------------------------------------------------

def _gray_u8(image: np.ndarray) -> np.ndarray:
    """uint8 grey image from grey, BGR or BGRA input (alpha composited on white, as Sketchy PNGs)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        rgb = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        image = rgb.astype(np.uint8)
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA channel order -> RGB / RGBA (grey images unchanged); its own inverse."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return image[:, :, ::-1]
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, [2, 1, 0, 3]]
    return image


#: RGB / RGBA -> OpenCV's BGR / BGRA: the same channel swap as :func:`bgr_to_rgb`.
rgb_to_bgr = bgr_to_rgb


def sketch_strokes(sketch: np.ndarray) -> np.ndarray:
    """Stroke pixels of a sketch (OpenCV channel order), bool ``[H, W]``.

    Uses :func:`psc6k.keypoints.binarize`, the one binarisation of sketches; an empty sketch
    gives an empty stroke map instead of an error (a baseline answers for every pair).
    """
    try:
        return np.asarray(binarize(bgr_to_rgb(sketch)), dtype=bool)
    except Psc6kError:
        return np.zeros(np.asarray(sketch).shape[:2], dtype=bool)


def sketch_object_mask(sketch: np.ndarray) -> np.ndarray:
    """Filled object mask of a sketch (OpenCV channel order), bool ``[H, W]``.

    Uses :func:`psc6k.keypoints.sketch_mask` (the one implementation of SPEC §4 A.1's outline
    filling); when it gives up on a sketch (e.g. strokes it cannot connect) the stroke pixels
    are used, which still carry the object's position and extent; an empty sketch gives the
    whole image.
    """
    try:
        mask = np.asarray(sketch_mask(bgr_to_rgb(sketch)), dtype=bool)
    except Psc6kError:
        mask = sketch_strokes(sketch)
    if not mask.any():
        mask = np.ones(np.asarray(sketch).shape[:2], dtype=bool)
    return mask


def photo_foreground(photo: np.ndarray, prior: np.ndarray | None = None, iterations: int = 3,
                     work_size: int = 128) -> np.ndarray:
    """Object mask of a photo by GrabCut, bool ``[H, W]``.

    Parameters
    ----------
    photo : ndarray [H, W, 3] uint8 (BGR) or [H, W]
    prior : bool ndarray [H, W], optional
        Where the object is expected (e.g. the sketch's filled outline): pixels inside its
        dilation start as probable foreground, pixels far from it as background. Without a
        prior, a rectangle inset by 6 % of the image seeds GrabCut (objects in Sketchy photos
        are large and centred).
    iterations : int
        GrabCut iterations.
    work_size : int
        GrabCut runs on the image resized to this side (4x faster at 128 than at 256; the mask
        only feeds moments and an outline), and the mask is scaled back.

    Notes
    -----
    Falls back to the prior (or the central rectangle) when GrabCut returns an empty or
    almost full mask.
    """
    img = np.asarray(photo)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    img = np.ascontiguousarray(img[:, :, :3].astype(np.uint8))
    full_h, full_w = img.shape[:2]
    if work_size and max(full_h, full_w) > work_size:
        img = cv2.resize(img, (work_size, work_size), interpolation=cv2.INTER_AREA)
        if prior is not None:
            prior = cv2.resize(prior.astype(np.uint8), (work_size, work_size), interpolation=cv2.INTER_NEAREST) > 0
    h, w = img.shape[:2]
    scale = w / full_w  # radii below are in full-resolution pixels
    gc_mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    if prior is not None and prior.any():
        prior = prior.astype(np.uint8)
        near = cv2.dilate(prior, _disk(15 * scale)) > 0
        far = cv2.dilate(prior, _disk(40 * scale)) > 0
        gc_mask[far] = cv2.GC_PR_BGD
        gc_mask[near] = cv2.GC_PR_FGD
        fallback = prior > 0
    else:
        m = int(round(0.06 * min(h, w)))
        gc_mask[m:h - m, m:w - m] = cv2.GC_PR_FGD
        fallback = gc_mask == cv2.GC_PR_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        # GrabCut's GMM initialisation draws from OpenCV's global RNG: seed it per call, so a pair's
        # result does not depend on what ran before in the process (other pairs, other tests)
        cv2.setRNGSeed(0)
        cv2.grabCut(img, gc_mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        mask = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
    except cv2.error:
        mask = fallback
    frac = mask.mean()
    if frac < 0.01 or frac > 0.97:
        mask = fallback
    if mask.shape != (full_h, full_w):
        mask = cv2.resize(mask.astype(np.float32), (full_w, full_h), interpolation=cv2.INTER_LINEAR) >= 0.5
    return mask


def _disk(radius: float) -> np.ndarray:
    """Elliptic structuring element of the given radius (at least 1 px)."""
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def mask_moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and per-axis standard deviation of a mask, in pixels.

    Returns
    -------
    centroid : float64 [2] (x, y)
    spread : float64 [2] (sx, sy), at least 1 px
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("empty mask")
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    return pts.mean(axis=0), np.maximum(pts.std(axis=0), 1.0)


def affine_from_masks(source_mask: np.ndarray, target_mask: np.ndarray, max_scale: float = 4.0) -> np.ndarray:
    """Axis-aligned affine map (2 x 3, source pixels -> target pixels) matching mask moments.

    The map sends the source centroid to the target centroid and scales each axis by the ratio
    of the spreads, clipped to ``[1 / max_scale, max_scale]`` so a failed mask cannot explode it.
    """
    c_s, s_s = mask_moments(source_mask)
    c_t, s_t = mask_moments(target_mask)
    scale = np.clip(s_t / s_s, 1.0 / max_scale, max_scale)
    return np.array([[scale[0], 0.0, c_t[0] - scale[0] * c_s[0]],
                     [0.0, scale[1], c_t[1] - scale[1] * c_s[1]]])


# --------------------------------------------------------------------------------------------
# chamfer refinement of the affine
# --------------------------------------------------------------------------------------------

#: Truncation (px) of the edge distance in the chamfer cost: clutter far from the object costs
#: the same as no edge at all.
CHAMFER_TRUNCATION_PX = 15.0


def edge_distance(edges: np.ndarray, truncation: float = CHAMFER_TRUNCATION_PX) -> np.ndarray:
    """Truncated distance (px) of every pixel to the nearest edge pixel, float32 ``[H, W]``."""
    edges = np.asarray(edges, dtype=bool)
    if not edges.any():
        return np.full(edges.shape, truncation, np.float32)
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 5)
    return np.minimum(dist, truncation).astype(np.float32)


def chamfer_cost(matrix: np.ndarray, points: np.ndarray, distance: np.ndarray) -> float:
    """Mean truncated edge distance at the sketch points mapped by ``matrix`` into the photo.

    Points mapped off the image cost the truncation value (the maximum of ``distance``).
    """
    q = points @ matrix[:, :2].T + matrix[:, 2]
    h, w = distance.shape
    inside = (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
    x = np.clip(np.rint(q[:, 0]).astype(np.int64), 0, w - 1)
    y = np.clip(np.rint(q[:, 1]).astype(np.int64), 0, h - 1)
    return float(np.where(inside, distance[y, x], distance.max()).mean()) if len(q) else 0.0


def refine_affine_chamfer(matrix: np.ndarray, points: np.ndarray, distance: np.ndarray, *,
                          max_shift: float = 24.0, max_scale: float = 1.25,
                          steps=((8.0, 0.08), (4.0, 0.04), (2.0, 0.02), (1.0, 0.01))) -> tuple[np.ndarray, float]:
    """Local search of translation and per-axis scale minimising :func:`chamfer_cost`.

    Coordinate descent with shrinking steps (pixels, relative scale), bounded to ``max_shift`` px
    of movement of the sketch centroid and a scale change within ``[1 / max_scale, max_scale]``
    per axis, so it cannot collapse the drawing onto a single edge.

    Returns
    -------
    matrix : float64 [2, 3]
    cost : float
    """
    start = np.asarray(matrix, dtype=np.float64)
    best_m, best = start.copy(), chamfer_cost(start, points, distance)
    if not len(points):
        return best_m, best
    centroid = points.mean(axis=0)
    start_c = start[:, :2] @ centroid + start[:, 2]
    start_diag = np.where(np.abs(start.diagonal()) > 1e-9, start.diagonal(), 1.0)
    for shift, rel in steps:
        improved = True
        while improved:
            improved = False
            for axis in (0, 1):
                for sign in (-1.0, 1.0):
                    for kind in ("shift", "scale"):
                        cand = best_m.copy()
                        if kind == "shift":
                            cand[axis, 2] += sign * shift
                        else:  # scale about the mapped centroid, which stays put
                            f = 1.0 + sign * rel
                            mc = best_m[axis, :2] @ centroid + best_m[axis, 2]
                            cand[axis, :2] = best_m[axis, :2] * f
                            cand[axis, 2] = mc - f * (best_m[axis, :2] @ centroid)
                        ratio = np.abs(cand.diagonal() / start_diag)
                        moved = np.abs(cand[:, :2] @ centroid + cand[:, 2] - start_c)
                        if ratio.min() < 1 / max_scale or ratio.max() > max_scale or moved.max() > max_shift:
                            continue
                        cost = chamfer_cost(cand, points, distance)
                        if cost < best - 1e-9:
                            best_m, best, improved = cand, cost, True
    return best_m, best


def chamfer_affine(photo_edge_map: np.ndarray, sketch_strokes_mask: np.ndarray, moments_affine: np.ndarray,
                   max_points: int = 1500) -> np.ndarray:
    """The affine (sketch -> photo) of the ``affine`` baseline.

    Three starting hypotheses -- the identity (Sketchy sketches are drawn over roughly the
    photo's layout), the mask-moments affine, and their average -- are each refined by
    :func:`refine_affine_chamfer` against the photo's object edges (:func:`photo_edges`; edges
    of background clutter would attract the strokes anywhere); the lowest cost wins.
    """
    ys, xs = np.nonzero(sketch_strokes_mask)
    if xs.size == 0:
        return np.asarray(moments_affine, dtype=np.float64)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    if len(points) > max_points:  # evenly thinned: the cost is a mean, so this barely changes it
        points = points[np.linspace(0, len(points) - 1, max_points).round().astype(np.int64)]
    distance = edge_distance(photo_edge_map)
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    moments = np.asarray(moments_affine, dtype=np.float64)
    results = [refine_affine_chamfer(m, points, distance) for m in (ident, moments, 0.5 * (ident + moments))]
    return min(results, key=lambda r: r[1])[0]


# --------------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------------

def structure_map(edges: np.ndarray, scale_px: float = STRUCTURE_SCALE_PX) -> np.ndarray:
    """uint8 image ``255 * exp(-d / scale_px)`` with ``d`` the distance to the nearest edge pixel.

    Photo edges and sketch strokes look nothing alike as intensities; their distance fields
    do, and unlike a thin line they have gradients far from the line for the flow to follow.
    """
    edges = np.asarray(edges, dtype=bool)
    if not edges.any():
        return np.zeros(edges.shape, np.uint8)
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(255.0 * np.exp(-dist / scale_px), 0, 255).astype(np.uint8)


def photo_edges(photo: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Edges a sketcher would draw: the object's outline plus strong edges inside the object."""
    gray = cv2.GaussianBlur(_gray_u8(photo), (5, 5), 1.5)
    canny = cv2.Canny(gray, 60, 150) > 0
    obj = object_mask.astype(np.uint8)
    inside = cv2.erode(obj, np.ones((5, 5), np.uint8)) > 0
    outline = cv2.morphologyEx(obj, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return outline | (canny & inside)


def _sample_field(field: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Bilinear read of a ``[H, W, C]`` float field at ``[..., 2]`` pixel positions (border clamp)."""
    map_x = points_px[..., 0].astype(np.float32)
    map_y = points_px[..., 1].astype(np.float32)
    return cv2.remap(field.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def dense_flow(source_structure: np.ndarray, target_structure: np.ndarray, init: np.ndarray,
               size: int = DENSE_FLOW_SIZE, smooth_sigma: float = 10.0) -> np.ndarray:
    """Dense flow source -> target by DIS optical flow on structure maps, initialised by ``init``.

    Parameters
    ----------
    source_structure, target_structure : uint8 [256, 256]
        Structure maps (:func:`structure_map`) of the source and target images.
    init : float [2, 3]
        Affine map source pixels -> target pixels.
    size : int
        Side of the returned flow grid.
    smooth_sigma : float
        Gaussian sigma (px) applied to the residual flow, keeping the correction smooth where the
        structure maps are flat.

    Returns
    -------
    ndarray, float32 [size, size, 2]
        Normalised target coordinates on the source grid.

    Notes
    -----
    The target is warped into the source frame by the affine (``W(x) = target(T x)``), DIS
    finds ``f`` with ``source(x) ~ W(x + f(x))``, so the source pixel ``x`` lands at
    ``T (x + f(x))`` in the target.
    """
    h, w = source_structure.shape
    init = np.asarray(init, dtype=np.float64)
    warped = cv2.warpAffine(target_structure, init, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    residual = dis.calc(source_structure, warped, None)
    if smooth_sigma > 0:
        residual = cv2.GaussianBlur(residual, (0, 0), smooth_sigma)
    pts = grid_pixels(size, image_size=w)
    moved = pts + _sample_field(residual, pts)
    mapped = moved @ init[:, :2].T + init[:, 2]
    return pixels_to_flow(mapped, size=w).astype(np.float32)


# --------------------------------------------------------------------------------------------
# per pair and per benchmark
# --------------------------------------------------------------------------------------------

@dataclass
class PairFlows:
    """Both flows of one pair, each float32 ``[S, S, 2]``."""

    sketch_to_photo: np.ndarray
    photo_to_sketch: np.ndarray


def pair_masks(photo: np.ndarray, sketch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(photo object mask, sketch object mask), each bool ``[256, 256]``."""
    sketch_mask = sketch_object_mask(sketch)
    photo_mask = photo_foreground(photo[:, :, :3] if photo.ndim == 3 else photo, prior=sketch_mask)
    return photo_mask, sketch_mask


def baseline_pairs(names, photo: np.ndarray | None, sketch: np.ndarray | None) -> dict[str, PairFlows]:
    """Flows of several baselines for one (photo, sketch) pair of 256 x 256 images.

    The masks and the affine are computed once and shared by ``affine`` and ``dense``.
    ``photo`` and ``sketch`` (OpenCV channel order) may be None when only ``identity`` is asked.
    """
    names = list(names)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise Psc6kError(f"unknown baseline {unknown[0]!r}; expected one of {', '.join(BASELINES)}")
    out: dict[str, PairFlows] = {}
    if "identity" in names:
        flow = identity_flow(1, LINEAR_FLOW_SIZE)[0].astype(np.float32)
        out["identity"] = PairFlows(flow, flow.copy())
    if "affine" in names or "dense" in names:
        photo_mask, sketch_mask = pair_masks(photo, sketch)
        strokes = sketch_strokes(sketch)
        edges = photo_edges(photo, photo_mask)
        s2p = chamfer_affine(edges, strokes, affine_from_masks(sketch_mask, photo_mask))
        p2s = invert_affine(s2p)
        if "affine" in names:
            out["affine"] = PairFlows(affine_flow(s2p), affine_flow(p2s))
        if "dense" in names:
            sketch_struct = structure_map(strokes)
            photo_struct = structure_map(edges)
            out["dense"] = PairFlows(dense_flow(sketch_struct, photo_struct, s2p),
                                     dense_flow(photo_struct, sketch_struct, p2s))
    return {n: out[n] for n in names}


def baseline_pair(name: str, photo: np.ndarray | None, sketch: np.ndarray | None) -> PairFlows:
    """Flows of baseline ``name`` for one (photo, sketch) pair (see :func:`baseline_pairs`)."""
    return baseline_pairs([name], photo, sketch)[name]


def run_baselines(names, annotations, images_root, progress: bool = True) -> dict:
    """Run several baselines on every pair of ``annotations`` (images read once per pair).

    Parameters
    ----------
    names : sequence of {"identity", "affine", "dense"}
    annotations : psc6k.formats.Annotations
    images_root : path
        The Sketchy root the annotation paths are relative to (unused by ``identity`` alone).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict name -> psc6k.submission.Submission
        Flow submissions (SPEC §5), method ``baseline-<name>``, pairs in annotation order.
    """
    from tqdm import tqdm

    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise Psc6kError(f"unknown baseline {unknown[0]!r}; expected one of {', '.join(BASELINES)}")
    needs_images = any(n != "identity" for n in names)
    flows = {n: ([], []) for n in names}
    pairs = list(zip(annotations.photo, annotations.sketch))
    for photo_rel, sketch_rel in tqdm(pairs, desc=f"baselines ({', '.join(names)})", unit="pair",
                                      disable=not progress, leave=False):
        photo = sketch = None
        if needs_images:
            # psc6k.images gives RGB; the baselines work in OpenCV's channel order (GrabCut, cvtColor)
            photo = rgb_to_bgr(read_image(images_root, photo_rel, "rgb"))
            sketch = rgb_to_bgr(read_image(images_root, sketch_rel, "rgb"))
        for name, pf in baseline_pairs(names, photo, sketch).items():
            flows[name][0].append(pf.sketch_to_photo)
            flows[name][1].append(pf.photo_to_sketch)
    if not pairs:
        raise Psc6kError("the annotations hold no pairs")
    return {n: Submission(method=f"baseline-{n}", kind="flow", photo=list(annotations.photo),
                          sketch=list(annotations.sketch), sketch_to_photo=np.stack(s2p),
                          photo_to_sketch=np.stack(p2s))
            for n, (s2p, p2s) in flows.items()}


def run_baseline(name: str, annotations, images_root, progress: bool = True):
    """Run baseline ``name`` on every pair of ``annotations`` -> a flow Submission."""
    return run_baselines([name], annotations, images_root, progress)[name]
