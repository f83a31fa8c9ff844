"""The whole A.1 pipeline on one sketch: image -> ink -> mask -> pseudo-parts -> keypoints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from psc6k.keypoints._morphology import single_threaded
from psc6k.keypoints.io import binarize, load_sketch, to_gray
from psc6k.keypoints.mask import object_mask
from psc6k.keypoints.parts import _centroid_keypoints, pseudo_parts

__all__ = ["KeypointResult", "analyze_sketch", "sample_keypoints"]


@dataclass
class KeypointResult:
    """Everything :func:`analyze_sketch` computed for one sketch (``--viz``, ``--report``).

    Attributes
    ----------
    gray : float32 [H, W]
        The sketch as gray levels in [0, 1] (1 = paper).
    ink : bool [H, W]
        The object's strokes (``True`` = ink), dust and stray marks removed.
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
    set_aside : bool [H, W]
        Ink set aside as dust or stray marks (``True`` = ink not used).
    n_dust, n_stray, n_pieces, max_dilations :
        As in :class:`psc6k.keypoints.mask.MaskResult`.
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
    set_aside: np.ndarray | None = None
    n_dust: int = 0
    n_stray: int = 0
    n_pieces: int = 1
    max_dilations: int = 0


def analyze_sketch(image, k: int = 8, seed: int = 0, *, max_dilations: int | None = None,
                   min_speck_area: int | None = None, stray_gap: int | None = None,
                   close_gaps_px: int = 0, n_samples: int = 300) -> KeypointResult:
    """Run the whole A.1 pipeline on one sketch and keep every intermediate.

    Parameters
    ----------
    image : array or path
        Sketch image (array, see :func:`psc6k.keypoints.to_gray`; a bool array is the ink,
        ``True`` = stroke) or a file path (read by :func:`psc6k.keypoints.load_sketch`).
    k, seed :
        As in :func:`psc6k.keypoints.pseudo_parts`.
    max_dilations, min_speck_area, stray_gap, close_gaps_px :
        As in :func:`psc6k.keypoints.object_mask`.
    n_samples :
        As in :func:`psc6k.keypoints.pseudo_parts`.
    """
    if isinstance(image, (str, os.PathLike)):
        gray = load_sketch(image)
    else:
        gray = to_gray(image)
    src = image if isinstance(image, np.ndarray) and image.dtype == bool else gray
    with single_threaded():
        m = object_mask(binarize(src), max_dilations=max_dilations, min_speck_area=min_speck_area,
                        stray_gap=stray_gap, close_gaps_px=close_gaps_px)
        parts, info = pseudo_parts(m.mask, k, seed, n_samples=n_samples, return_info=True)
        kps, moved = _centroid_keypoints(parts, *info["pixels"], k)  # = part_keypoints(parts, k)
    return KeypointResult(gray=gray, ink=m.ink, mask=m.mask, parts=parts, keypoints=kps,
                          dilation_iterations=m.dilations, stride=info["stride"],
                          n_nodes=info["n_nodes"], moved=moved, set_aside=m.set_aside,
                          n_dust=m.n_dust, n_stray=m.n_stray, n_pieces=m.n_pieces,
                          max_dilations=m.max_dilations)


def sample_keypoints(image, k: int = 8, seed: int = 0) -> np.ndarray:
    """``k`` keypoints of a sketch (SPEC §4 A.1): mask, spectral pseudo-parts, centroids.

    Parameters
    ----------
    image : array [H, W] / [H, W, C] or path
        Dark strokes on light paper; any size; uint8, uint16, float in [0, 1] or bool ink.
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
        Empty, all-black or unreadable image, or large pieces that cannot be connected.

    Examples
    --------
    >>> import cv2, numpy as np
    >>> img = np.full((128, 128), 255, np.uint8)
    >>> _ = cv2.circle(img, (64, 64), 40, 0, 2)
    >>> sample_keypoints(img).shape
    (8, 2)
    """
    return analyze_sketch(image, k, seed).keypoints
