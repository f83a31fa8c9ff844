"""The one image reader of psc6k: photos and sketches below a Sketchy-shaped root.

Every part of the toolkit (baselines, keypoint builder, report, demo, model data) reads images
through :func:`read_image`, so they all agree on three rules:

**Size.** PSC6K keypoints are pixel coordinates in Sketchy's ``rendered_256x256`` images
(SPEC §3), so an image of another size would silently pair keypoints with the wrong pixels. By
default an image must therefore be exactly ``256 x 256`` (:data:`psc6k.IMAGE_SIZE`); any other size
is refused with a :class:`~psc6k.errors.FormatError` naming the file and its size, *before* its
pixels are decoded. Nothing is ever resized here: resizing is a decision about where the keypoints
go, and belongs to whoever makes the annotations (resize your images to 256 x 256 *before*
placing keypoints on them). Code that deliberately works at any resolution (e.g. the keypoint
builder on one's own sketches) passes ``size=None``; ``size=S`` asks for ``S x S`` images.

**Colour.** ``mode="rgb"`` gives ``uint8 [H, W, 3]`` in RGB order; ``"gray"`` gives ``uint8 [H, W]``
(ITU-R 601-2 luma, ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``, as Pillow's ``"L"``).
Transparent pixels (RGBA, LA, palette transparency) are composited over white, since sketches
are drawn on white paper. 16-bit images are scaled to 8 bits.

**Hostile files.** A missing file, a directory or FIFO, an empty, truncated or corrupt file, a
file that is not an image, and one whose header announces more than :data:`MAX_IMAGE_PIXELS`
pixels (a decompression bomb: refused from the header, never decoded) each give one
``FormatError`` line naming the file.

Examples
--------
>>> from psc6k.data import sample_path
>>> from psc6k.formats import read_annotations
>>> root = sample_path()
>>> ann = read_annotations(root / "test_pairs_ps.csv")
>>> read_image(root, ann.photo[0]).shape, read_image(root, ann.sketch[0], "gray").dtype
((256, 256, 3), dtype('uint8'))
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.errors import FormatError

#: Colour modes of :func:`read_image`.
MODES = ("rgb", "gray")
#: Largest image (width x height) decoded when ``size=None``: 64 megapixels (192 MB as RGB).
MAX_IMAGE_PIXELS = 8192 * 8192
#: Largest image file opened at all (a 256 x 256 PNG is well under 1 MB).
MAX_FILE_BYTES = 256 * 1024 * 1024


def read_image(root, relpath, mode: str = "rgb", *, size: int | None = IMAGE_SIZE) -> np.ndarray:
    """Read the image ``root / relpath`` as uint8 pixels.

    Parameters
    ----------
    root : path or None
        The Sketchy root the CSV paths are relative to (``None``: ``relpath`` is a full path).
    relpath : str or path
        Path as written in the PSC6K CSVs, e.g. ``photo/tx_000000000000/airplane/n02691156_58.jpg``.
    mode : {"rgb", "gray"}
        ``"rgb"``: uint8 ``[H, W, 3]``, RGB order. ``"gray"``: uint8 ``[H, W]``, ITU-R 601-2 luma.
        Transparency is composited over white in both.
    size : int or None
        Required side in pixels (default 256, the PSC6K images); ``None`` accepts any size up to
        :data:`MAX_IMAGE_PIXELS`. Images are never resized.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3) or (H, W)
        With ``H == W == size`` unless ``size`` is None.

    Raises
    ------
    psc6k.errors.FormatError
        One line naming the file: missing, not a regular file, empty, too large, not an image,
        truncated or corrupt, or of another size than ``size``.
    ValueError
        For an unknown ``mode`` (a programming error, not a user one).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = Path(relpath) if root is None else Path(root) / relpath
    _check_file(path, relpath if root is not None else None)

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                _check_size(path, width, height, size)
                im.load()  # decodes now: a truncated or corrupt file raises here
                return _to_array(im, mode)
    except FormatError:
        raise
    except Image.DecompressionBombError:
        # Pillow's own header check (far larger images than MAX_IMAGE_PIXELS)
        raise FormatError(f"image is more than {MAX_IMAGE_PIXELS} pixels (decompression bomb?); "
                          "refused before decoding", file=path) from None
    except UnidentifiedImageError:
        raise FormatError("not an image file (or a format Pillow cannot read)", file=path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise FormatError(f"truncated or corrupt image ({exc})", file=path) from None


def _check_file(path: Path, relpath) -> None:
    listed = f" (listed as {str(relpath)!r}; is the images root right?)" if relpath is not None else ""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"image not found{listed}", file=path) from None
    except OSError as exc:
        raise FormatError(f"cannot open the image ({exc.strerror})", file=path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise FormatError(f"is {kind}, expected an image file{listed}", file=path)
    if st.st_size == 0:
        raise FormatError("empty file, expected an image", file=path)
    if st.st_size > MAX_FILE_BYTES:
        raise FormatError(f"file is {st.st_size / 2**20:.0f} MB, larger than the {MAX_FILE_BYTES // 2**20} MB "
                          "an image may have", file=path)


def _check_size(path: Path, width: int, height: int, size: int | None) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise FormatError(f"image is {width}x{height}, more than {MAX_IMAGE_PIXELS} pixels "
                          "(decompression bomb?); refused before decoding", file=path)
    if size is not None and (width, height) != (size, size):
        raise FormatError(f"image is {width}x{height}, expected {size}x{size}: PSC6K keypoints are pixels of "
                          f"the {size}x{size} images, so resize the images before placing keypoints on them",
                          file=path)


def _to_array(im, mode: str) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = arr / max(float(arr.max(initial=0)), 1.0) * 255.0
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    out = im.convert("RGB" if mode == "rgb" else "L")
    return np.array(out, dtype=np.uint8)
