"""The object mask of a sketch (paper Appendix A.1), with stray marks set aside.

The paper: *fill the outermost contour; if the strokes form several contours, dilate and fill
again, iteratively, until all strokes are connected.*  Real drawings also carry marks that are
not the object — scanner dust, a pen speck, a stray dot far from the drawing — and dilating
until those join would swell the whole mask by half their distance.  So, in order:

1. **Dust** — ink components under ``min_speck_area`` px (3 px per 256 x 256) — is set aside.
2. **Groups** — ink pieces whose nearest pixels are at most ``stray_gap`` px apart
   (chessboard distance; default 1/12 of the image side, 21 px at 256) form one group.
3. **Stray marks** — a group holding less than ``stray_fraction`` of the ink (default 5%) that
   is not the largest group and lies neither inside the rest's outline (closed across
   ``stray_gap``) nor inside the dilated, filled object — is set aside.  Everything else is the object's ink.
4. **The paper's rule** on the object's ink: fill; while the fill has several 8-connected
   pieces, dilate the ink (3 x 3) and fill again.  The bound adapts to the drawing: at most
   1/6 of the larger side of the object ink's bounding box (at least 4), so gaps up to a third
   of the drawing's size are bridged — two pieces farther apart than they are large stay
   apart.  Only when the *large* pieces stay apart is the sketch an error.

Nothing is dropped silently: :class:`MaskResult` carries the set-aside ink and its counts
(``psc6k build-keypoints --report`` writes them per sketch, ``--viz`` draws them in red).
The thresholds and the evidence they were chosen from are in ``docs/builder.md``.

Boolean convention (the whole package): ``True`` = ink in an ink image, object in a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from psc6k.keypoints._morphology import (chebyshev_distance, components, fill_holes,
                                         n_components)
from psc6k.keypoints.errors import SketchError
from psc6k.keypoints.io import binarize

__all__ = ["MaskResult", "object_mask", "sketch_mask", "close_gaps", "remove_specks",
           "STRAY_FRACTION", "STRAY_GAP_FRACTION", "DILATION_EXTENT_FRACTION"]

#: A group of ink holding less than this share of the ink can be a stray mark.
STRAY_FRACTION = 0.05
#: Pieces closer than this share of the image side (chessboard px) belong to one group.
STRAY_GAP_FRACTION = 1 / 12
#: Dilations are bounded by this share of the object ink's bounding-box side.
DILATION_EXTENT_FRACTION = 1 / 6


@dataclass
class MaskResult:
    """What :func:`object_mask` found.

    Attributes
    ----------
    mask : bool [H, W]
        The object mask (filled, possibly dilated strokes); one 8-connected component.
    ink : bool [H, W]
        The object's ink: the strokes the mask was built from.
    set_aside : bool [H, W]
        Ink not used: dust and stray marks (``ink | set_aside`` is the binarised input).
    dilations : int
        3 x 3 dilations needed to connect the strokes (0 when the fill alone is one piece).
    n_dust, n_stray : int
        Ink components set aside as dust, and stray groups set aside.
    n_pieces : int
        Separate pieces of the object's ink before dilation (groups joined by it; 1 = none).
    max_dilations : int
        The bound that applied.
    """

    mask: np.ndarray
    ink: np.ndarray
    set_aside: np.ndarray
    dilations: int
    n_dust: int = 0
    n_stray: int = 0
    n_pieces: int = 1
    max_dilations: int = 0

    @property
    def n_set_aside(self) -> int:
        """Components set aside (dust and stray groups)."""
        return self.n_dust + self.n_stray


def default_speck_area(shape) -> int:
    """Dust threshold (px): 3 px per 256 x 256 image, at least 2."""
    return max(2, int(round(3 * shape[0] * shape[1] / 65536)))


def default_stray_gap(shape) -> int:
    """Grouping distance (chessboard px): 1/12 of the larger image side (21 at 256)."""
    return max(2, int(round(STRAY_GAP_FRACTION * max(shape))))


def default_max_dilations(ink: np.ndarray) -> int:
    """Dilation bound for an ink image: 1/6 of the larger side of its bounding box, >= 4."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return 4
    extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return max(4, int(math.ceil(DILATION_EXTENT_FRACTION * extent)))


def remove_specks(ink: np.ndarray, min_area: int) -> np.ndarray:
    """Ink without its 8-connected components under ``min_area`` px (the largest component is
    always kept)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.view(np.uint8), connectivity=8)
    if n <= 2:
        return ink
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    if not keep.any():
        keep[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = True
    return keep[labels]


def object_mask(ink: np.ndarray, *, max_dilations: int | None = None,
                min_speck_area: int | None = None, stray_gap: int | None = None,
                stray_fraction: float = STRAY_FRACTION, close_gaps_px: int = 0) -> MaskResult:
    """The object mask of an ink image, with dust and stray marks set aside.

    Parameters
    ----------
    ink : bool [H, W]
        ``True`` = stroke (see :func:`psc6k.keypoints.binarize`).
    max_dilations : int, optional
        Bound on 3 x 3 dilations; default :func:`default_max_dilations` of the object's ink
        (1/6 of its bounding-box side; 34 for a 200 px drawing).
    min_speck_area : int, optional
        Dust threshold in px (default :func:`default_speck_area`).
    stray_gap : int, optional
        Grouping distance in chessboard px (default :func:`default_stray_gap`); 0 turns stray
        marks off (every piece is the object's, as the paper reads literally).
    stray_fraction : float
        Share of the ink under which a separate group is a stray mark.
    close_gaps_px : int
        Beyond the paper, off by default: also close outline gaps up to ~2x this many px
        (see :func:`close_gaps`).

    Raises
    ------
    SketchError
        ``"not_connected"`` when the object's large pieces stay apart after the bound.
    """
    ink = np.asarray(ink, dtype=bool)
    shape = ink.shape
    min_speck_area = default_speck_area(shape) if min_speck_area is None else int(min_speck_area)
    stray_gap = default_stray_gap(shape) if stray_gap is None else int(stray_gap)

    # 1. dust
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.view(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= min_speck_area
    keep[0] = False
    if n > 1 and not keep.any():
        keep[1 + int(np.argmax(areas[1:]))] = True
    n_dust = int(n - 1 - keep.sum())
    clean = keep[labels] if n_dust else ink
    set_aside = ink & ~clean

    # the common case: the filled strokes are one piece already
    filled = fill_holes(clean)
    if n_components(filled) == 1:
        mask = close_gaps(filled, close_gaps_px)
        return MaskResult(mask, clean, set_aside, 0, n_dust=n_dust, max_dilations=0)

    # 2-3. groups and stray-mark candidates
    cheb = chebyshev_distance(clean)
    obj_ink, small, groups, n_groups = clean, None, None, 0
    if stray_gap > 0:
        radius = (stray_gap - 1) // 2  # pieces <= 2 * radius + 1 <= stray_gap apart touch
        groups, n_groups = components(cheb <= radius)
        if n_groups > 1:
            size = np.bincount(groups[clean], minlength=n_groups + 1)
            small = size < stray_fraction * size.sum()
            small[0] = False
            small[int(np.argmax(size))] = False
            if small.any():
                # a candidate inside the rest's outline (closed across gaps up to stray_gap)
                # is on the object: an eye, a button, hatching
                rest = clean & ~small[groups]
                region = fill_holes(chebyshev_distance(rest) <= radius)
                outside = np.bincount(groups[clean & ~region], minlength=n_groups + 1)
                small &= outside > 0
            if small.any():
                obj_ink = clean & ~small[groups]
                cheb = chebyshev_distance(obj_ink)

    # 4. the paper's rule on the object's ink, bounded by the drawing's size
    bound = default_max_dilations(obj_ink) if max_dilations is None else int(max_dilations)
    mask, dilations = _fill_and_dilate(obj_ink, cheb, bound)
    if small is not None and small.any() and dilations:
        # a candidate inside the dilated, filled object is on it too (the pieces it sits
        # between were joined): put it back and apply the rule to all of the object's ink
        outside = np.bincount(groups[clean & ~mask], minlength=n_groups + 1)
        inside = small & (outside == 0)
        if inside.any():
            small &= ~inside
            obj_ink = clean & ~small[groups]
            cheb = chebyshev_distance(obj_ink)
            bound = default_max_dilations(obj_ink) if max_dilations is None else int(max_dilations)
            mask, dilations = _fill_and_dilate(obj_ink, cheb, bound)
    n_stray = int(small.sum()) if small is not None else 0
    set_aside = set_aside | (clean & ~obj_ink)
    mask = close_gaps(mask, close_gaps_px)
    return MaskResult(mask, obj_ink, set_aside, dilations, n_dust=n_dust, n_stray=n_stray,
                      n_pieces=_n_pieces(obj_ink, dilations), max_dilations=bound)


def _n_pieces(ink: np.ndarray, dilations: int) -> int:
    """Pieces of ``ink`` the dilations joined: 8-connected components of the filled ink."""
    return n_components(fill_holes(ink)) if dilations else 1


def _fill_and_dilate(ink: np.ndarray, cheb: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Fewest dilations ``t <= bound`` whose filled result is one 8-connected piece.

    ``fill(dilate_t(ink))`` connected implies ``fill(dilate_{t+1}(ink))`` connected (every new
    pixel touches the old result, every new hole is bounded by it), so the fewest ``t`` is found
    by stepping 1, 2, 4, ... and bisecting — the paper's linear loop gives the same ``t``.
    """
    def connected(t):
        filled = fill_holes(cheb <= t)
        return n_components(filled) == 1, filled

    filled = fill_holes(ink)
    if n_components(filled) == 1:
        return filled, 0
    lo, hi, found = 0, None, None  # connected(lo) is False
    t = 1
    while t <= bound:
        ok, f = connected(t)
        if ok:
            hi, found = t, f
            break
        lo, t = t, t * 2
    if hi is None:
        if lo < bound:
            ok, f = connected(bound)
            if ok:
                hi, found = bound, f
        if hi is None:
            _, n = components(fill_holes(cheb <= bound))
            raise SketchError(
                f"the drawing's large pieces form {n} separate parts even after {bound} dilations "
                "(the bound: 1/6 of the drawing's size); cannot build one object mask "
                "(a larger `max_dilations` raises the bound)", reason="not_connected", param="max_dilations")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, f = connected(mid)
        if ok:
            hi, found = mid, f
        else:
            lo = mid
    return found, hi


def close_gaps(mask: np.ndarray, radius: int) -> np.ndarray:
    """Close outline gaps up to ~``2 * radius`` px: fill the mask dilated by ``radius`` (square),
    erode it back by ``radius`` and fill again (a morphological closing with a fill in the middle).

    Beyond the paper (off by default; see ``docs/builder.md`` for the measurements behind that):
    the paper stops dilating once the strokes touch, which leaves an outline with a small gap
    unfilled when the pieces already touch elsewhere.  The result contains ``mask`` and is one
    component; notches narrower than ``2 * radius`` are filled too.
    """
    if radius <= 0:
        return mask
    r = int(radius)
    padded = np.pad(mask, r + 1).view(np.uint8)
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    grown = fill_holes(cv2.dilate(padded, kernel).astype(bool))
    closed = fill_holes(cv2.erode(grown.view(np.uint8), kernel).astype(bool) | padded.astype(bool))
    closed = closed[r + 1:-r - 1, r + 1:-r - 1]
    labels, n = components(closed)
    if n > 1:  # erosion can leave islands of the filled interior: keep the mask's component
        closed = labels == labels[np.nonzero(mask)][0]
    return closed


def sketch_mask(image, *, max_dilations: int | None = None, min_speck_area: int | None = None,
                stray_gap: int | None = None, close_gaps_px: int = 0,
                return_iterations: bool = False):
    """Object mask of a sketch (paper Appendix A.1): :func:`binarize` then :func:`object_mask`.

    Parameters
    ----------
    image : array [H, W] or [H, W, C]
        The sketch (see :func:`psc6k.keypoints.to_gray`); a bool array is the ink itself
        (``True`` = stroke).
    max_dilations, min_speck_area, stray_gap, close_gaps_px :
        As in :func:`object_mask`.
    return_iterations : bool
        Also return the number of dilations used.

    Returns
    -------
    mask : bool [H, W]
        One 8-connected component, ``True`` = object.
    iterations : int
        Only when ``return_iterations``.
    """
    res = object_mask(binarize(image), max_dilations=max_dilations, min_speck_area=min_speck_area,
                      stray_gap=stray_gap, close_gaps_px=close_gaps_px)
    return (res.mask, res.dilations) if return_iterations else res.mask
