"""Keypoint sampling on a sketch (SPEC §4, paper Appendix A.1).

One module per step, each readable top to bottom:

* :mod:`~psc6k.keypoints.io` — :func:`load_sketch` / :func:`to_gray` (any image to gray levels,
  1 = paper) and :func:`binarize` (gray to ink);
* :mod:`~psc6k.keypoints.mask` — :func:`object_mask` / :func:`sketch_mask`: dust and stray
  marks set aside, the outermost contour filled, dilate-and-fill until the strokes connect;
* :mod:`~psc6k.keypoints.spectral` — kNN affinity, Laplacian embedding, k-means;
* :mod:`~psc6k.keypoints.parts` — :func:`pseudo_parts` (8 connected pseudo-parts) and
  :func:`part_keypoints` (one centroid per part, on the part);
* :mod:`~psc6k.keypoints.pipeline` — :func:`analyze_sketch` / :func:`sample_keypoints`;
* :mod:`~psc6k.keypoints.quality` — coverage cost, connectivity, and the naive reference.

The batch over many sketches (``psc6k build-keypoints``), imported on its own (not from here):

* :mod:`~psc6k.keypoints.collect` — which sketches: a folder of images or a pair CSV;
* :mod:`~psc6k.keypoints.batch` — one sketch -> one record, the driver over worker processes,
  the final CSVs and summary;
* :mod:`~psc6k.keypoints.journal` — the crash-safe journal ``--resume`` continues from, CSVs
  written whole or not at all;
* :mod:`~psc6k.keypoints.inflight` — which sketches the workers are on, named when one dies;
* :mod:`~psc6k.keypoints.strips` — the ``--viz`` strip sketch | mask | pseudo-parts | keypoints.

**One boolean convention everywhere:** ``True`` is foreground — ink in an ink image (what
:func:`binarize` returns and what a bool *image* argument means), object in a mask, part pixels
in a part selection.  Paper/background is always ``False``.
"""

from psc6k.keypoints._morphology import single_threaded
from psc6k.keypoints.errors import SketchError
from psc6k.keypoints.io import binarize, load_sketch, to_gray
from psc6k.keypoints.mask import MaskResult, close_gaps, object_mask, remove_specks, sketch_mask
from psc6k.keypoints.parts import part_keypoints, pseudo_parts
from psc6k.keypoints.pipeline import KeypointResult, analyze_sketch, sample_keypoints
from psc6k.keypoints.quality import (coverage_cost, n_parts_connected, parts_connected,
                                     reference_pseudo_parts)

__all__ = [
    "SketchError",
    "KeypointResult",
    "MaskResult",
    "load_sketch",
    "to_gray",
    "binarize",
    "object_mask",
    "sketch_mask",
    "close_gaps",
    "remove_specks",
    "pseudo_parts",
    "part_keypoints",
    "sample_keypoints",
    "analyze_sketch",
    "coverage_cost",
    "parts_connected",
    "n_parts_connected",
    "reference_pseudo_parts",
    "single_threaded",
]
