"""Reading sketches: any image file or array to gray levels, and gray levels to ink.

Gray images are float32 ``[H, W]`` in [0, 1] with 1 = white paper, 0 = black ink (the natural
reading of a scan).  Every *boolean* image of the package follows one convention: ``True`` =
ink (stroke) — see :mod:`psc6k.keypoints`.

Examples
--------
>>> import numpy as np
>>> img = np.full((8, 8), 255, np.uint8); img[2:6, 3] = 0
>>> int(binarize(img).sum())
4
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psc6k.errors import FormatError, Psc6kError
from psc6k.images import read_image
from psc6k.keypoints.errors import SketchError
from psc6k.sketchy import SKETCH_DIR, sketchy_root_of_photo

__all__ = ["load_sketch", "to_gray", "binarize", "looks_like_photo", "refuse_photo_folder"]

#: A picture is a photograph, not a sketch, when more than this share of its pixels is mid-grey
#: (luma 0.2-0.8) ...
PHOTO_MIDTONE_FRACTION = 0.35
#: ... or coloured (channels more than 0.12 apart). Measured on the bundled sample: sketches
#: reach at most 0.05 mid-grey and 0 coloured; its photos at least 0.57 mid-grey and 0.36 coloured.
PHOTO_COLOUR_FRACTION = 0.25
#: Images of a folder checked by :func:`refuse_photo_folder` (spread over the folder).
PHOTO_CHECK_IMAGES = 8


def load_sketch(path) -> np.ndarray:
    """Read a sketch image file as float32 gray levels ``[H, W]`` in [0, 1] (1 = paper).

    Read through :func:`psc6k.images.read_image` (the one image reader: any size, any mode
    Pillow reads, transparency over white paper, hostile files refused).

    Raises
    ------
    SketchError
        ``reason="unreadable"`` for a missing, unreadable, truncated, oversized or non-image
        file (the reader's one-line message).
    """
    try:
        return to_gray(read_image(None, path, "gray", size=None))
    except FormatError as exc:
        raise SketchError(exc.reason, reason="unreadable", path=path) from None


def to_gray(image) -> np.ndarray:
    """Any image array to float32 gray levels ``[H, W]`` in [0, 1] (1 = paper).

    Parameters
    ----------
    image : array [H, W], [H, W, 1], [H, W, 2] (L + alpha), [H, W, 3] (RGB) or [H, W, 4] (RGBA)
        uint8 / uint16 (scaled by their range), float in [0, 1], or bool with the package's
        convention ``True`` = ink (so a bool image maps to 0 where ``True``, 1 elsewhere).
        Transparent pixels are composited over white paper.

    Raises
    ------
    SketchError
        ``"unreadable"`` for a wrong shape or non-finite values, ``"too_small"`` under 2 x 2 px.
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = (~arr).astype(np.float32)
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
    """Ink of a sketch: dark strokes on light paper -> bool ``[H, W]``, ``True`` = ink.

    The threshold is half-way between the paper level (90th percentile of gray) and the ink
    level (0.1th percentile), so anti-aliased grey edges split evenly and faint pencil-grey
    sketches still binarise.  A bool ``image`` is already ink and is returned as is (after
    the same empty / all-ink checks).

    Raises
    ------
    SketchError
        ``"empty"`` when the image has no contrast and is light (blank paper), ``"all_black"``
        when it is uniformly dark or more than ``max_ink_fraction`` of it is ink.
    """
    arr = np.asarray(image)
    if arr.dtype == bool and arr.ndim == 2:
        ink = arr
        if not ink.any():
            raise SketchError("the sketch is empty (no strokes)", reason="empty")
    else:
        gray = to_gray(arr)
        paper, ink_level = _levels(gray)
        if paper - ink_level < min_contrast:
            if paper >= 0.5:
                raise SketchError("the sketch is empty (no strokes darker than the paper)", reason="empty")
            raise SketchError("the image is all black; expected dark strokes on light paper",
                              reason="all_black")
        ink = gray < 0.5 * (paper + ink_level)
    fraction = float(ink.mean())
    if fraction > max_ink_fraction:
        raise SketchError(f"{100 * fraction:.0f}% of the image is dark; expected dark strokes on "
                          "light paper (inverted image?)", reason="all_black")
    return ink


def _levels(gray: np.ndarray) -> tuple[float, float]:
    """(paper, ink) levels: the 90th and 0.1th percentiles of gray (linear interpolation, as
    ``np.percentile``), from one ``np.partition`` instead of two sorts."""
    flat = gray.ravel()
    n = flat.size
    qs = (0.9 * (n - 1), 0.001 * (n - 1))
    idx = sorted({int(np.floor(q)) for q in qs} | {min(int(np.floor(q)) + 1, n - 1) for q in qs})
    part = np.partition(flat, idx)

    def at(q):
        lo = int(np.floor(q))
        hi = min(lo + 1, n - 1)
        return float(part[lo]) + (q - lo) * (float(part[hi]) - float(part[lo]))

    return at(qs[0]), at(qs[1])


def looks_like_photo(rgb: np.ndarray) -> bool:
    """Whether an RGB uint8 image ``[H, W, 3]`` is a photograph rather than a sketch.

    A sketch is dark strokes on light paper: few mid-grey pixels and next to no colour. A photo
    is mostly mid-tones, usually coloured (thresholds :data:`PHOTO_MIDTONE_FRACTION`,
    :data:`PHOTO_COLOUR_FRACTION`).

    Examples
    --------
    >>> paper = np.full((32, 32, 3), 255, np.uint8); paper[10, 4:28] = 0
    >>> looks_like_photo(paper), looks_like_photo(np.full((32, 32, 3), (90, 140, 60), np.uint8))
    (False, True)
    """
    rgb = np.asarray(rgb, dtype=np.float32) / 255.0
    luma = rgb @ np.float32([0.299, 0.587, 0.114])
    midtones = float(((luma > 0.2) & (luma < 0.8)).mean())
    colour = float(((rgb.max(axis=2) - rgb.min(axis=2)) > 0.12).mean())
    return midtones > PHOTO_MIDTONE_FRACTION or colour > PHOTO_COLOUR_FRACTION


def refuse_photo_folder(folder, paths) -> None:
    """Refuse a folder of photographs given where sketches are expected, in one line.

    Sketchy photos are known by their path (a ``photo`` folder under ``rendered_256x256``, as
    in a Sketchy root); any other folder by :func:`looks_like_photo` on up to
    :data:`PHOTO_CHECK_IMAGES` of its images, spread over it: more than half photo-like refuses.
    Unreadable images are left to the per-sketch checks.

    Raises
    ------
    psc6k.errors.Psc6kError
        Naming the folder, an example photo and where the sketches are.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        root = sketchy_root_of_photo(path)
        if root is not None:
            raise Psc6kError(f"{folder}: holds Sketchy photos (e.g. {path}); keypoints are made for sketches: give "
                             f"the sketch folder {root / SKETCH_DIR} or a pair CSV")
    checked = paths[::max(1, len(paths) // PHOTO_CHECK_IMAGES)][:PHOTO_CHECK_IMAGES]
    photos = []
    for path in checked:
        try:
            if looks_like_photo(read_image(None, path, "rgb", size=None)):
                photos.append(path)
        except FormatError:
            continue
    if 2 * len(photos) > len(checked):
        raise Psc6kError(f"{folder}: holds photos, not sketches ({len(photos)} of {len(checked)} images checked "
                         f"are mostly mid-tones or colour, e.g. {photos[0]}); keypoints are made for sketches "
                         "(dark strokes on light paper): give a folder of sketches or a pair CSV")
