"""Small binary-image operations shared by the keypoint modules (OpenCV-backed).

Boolean convention of the whole package: ``True`` is foreground — a stroke pixel in an *ink*
image, an object pixel in a *mask*, a part pixel in a part selection.  Paper is ``False``.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import cv2
import numpy as np

#: 8-connectivity, used for strokes, masks and parts throughout.
EIGHT = np.ones((3, 3), dtype=bool)


def components(binary: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a bool image.

    Returns
    -------
    labels : int32 [H, W]
        0 = background, 1..n = components.
    n : int
        Number of components.

    OpenCV's labelling, several times faster than ``scipy.ndimage.label``.
    """
    img = binary.view(np.uint8) if binary.dtype == bool else binary.astype(np.uint8)
    n, labels = cv2.connectedComponents(img, connectivity=connectivity)
    return labels, n - 1


def n_components(binary: np.ndarray) -> int:
    """Number of 8-connected components of a bool image."""
    return components(binary)[1]


def dilate1(binary: np.ndarray) -> np.ndarray:
    """3 x 3 dilation of a bool image (~10x faster than ``ndimage.binary_dilation`` here)."""
    return cv2.dilate(binary.view(np.uint8), EIGHT.view(np.uint8)).view(bool)


def chebyshev_distance(binary: np.ndarray) -> np.ndarray:
    """float32 [H, W]: Chebyshev (chessboard) distance in px of every pixel to the nearest
    ``True`` pixel.  ``distance <= n`` is exactly ``n`` successive 3 x 3 dilations, so one
    transform serves every dilation count."""
    return cv2.distanceTransform((~binary).view(np.uint8), cv2.DIST_C, 3)


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill everything the foreground encloses (the outermost contours, filled).

    Background pixels 4-connected to the image border stay background, all others become
    foreground: the same result as ``scipy.ndimage.binary_fill_holes`` for 8-connected strokes.
    One OpenCV flood fill of the background from outside a 1-px frame (the frame joins every
    border pixel): ~3x faster than labelling the background's components, ~30x faster than SciPy.
    """
    h, w = binary.shape
    framed = np.zeros((h + 2, w + 2), np.uint8)
    framed[1:-1, 1:-1] = binary.view(np.uint8) if binary.dtype == bool else binary.astype(bool)
    cv2.floodFill(framed, None, (0, 0), 2, flags=4)
    return framed[1:-1, 1:-1] != 2


_CONTROLLER = None
#: ``len(sys.modules)`` when the controller was made: a library with a thread pool arrives with an
#: import (torch's OpenMP, say, loaded after the first sketch), so more modules mean look again.
_CONTROLLER_MODULES = 0


def _one_pool_thread():
    """Context limiting BLAS and OpenMP (scikit-learn's k-means) to one thread for this call
    only (restored on exit)."""
    global _CONTROLLER, _CONTROLLER_MODULES
    try:
        if _CONTROLLER is None or len(sys.modules) != _CONTROLLER_MODULES:
            # the controller sees the libraries loaded when it is made: load scikit-learn's
            # OpenMP runtime (k-means) first, or it would stay unlimited
            import sklearn.cluster  # noqa: F401
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()  # ~3 ms: made again only after new imports
            _CONTROLLER_MODULES = len(sys.modules)
        return _CONTROLLER.limit(limits=1)
    except Exception:  # threadpoolctl missing or unusable: run as is
        return contextlib.nullcontext()


#: Per thread: depth of nested :func:`single_threaded` blocks.
_LOCAL = threading.local()
#: True once the whole process runs single-threaded (:func:`single_threaded_process`).
_PROCESS_SINGLE_THREADED = False


@contextlib.contextmanager
def single_threaded():
    """Run the enclosed code with one BLAS, one OpenMP and one OpenCV thread, restored on exit.

    The arrays of one sketch are small (a 256 x 256 image, a few hundred graph nodes): thread
    pools only add start-up and contention, badly so on a loaded machine or with several worker
    processes (measured: 4x the CPU time for the same wall time on a 16-core machine).  Nothing
    is changed globally beyond the outermost ``with`` block; nested blocks cost nothing, and so
    does every block after :func:`single_threaded_process` (setting and restoring the limits
    costs ~0.3 ms, a few % of a sketch).
    """
    depth = getattr(_LOCAL, "depth", 0)
    if _PROCESS_SINGLE_THREADED or depth > 0:
        _LOCAL.depth = depth + 1
        try:
            yield
        finally:
            _LOCAL.depth = depth
        return
    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    _LOCAL.depth = 1
    try:
        with _one_pool_thread():
            yield
    finally:
        _LOCAL.depth = 0
        cv2.setNumThreads(old)


def single_threaded_process() -> None:
    """Limit this whole process to one BLAS, OpenMP and OpenCV thread, for good (a worker
    process of ``psc6k build-keypoints``): :func:`single_threaded` then has nothing to do."""
    global _PROCESS_SINGLE_THREADED
    if _PROCESS_SINGLE_THREADED:
        return
    cv2.setNumThreads(1)
    _one_pool_thread()  # the limits apply when made and are never restored
    _PROCESS_SINGLE_THREADED = True
