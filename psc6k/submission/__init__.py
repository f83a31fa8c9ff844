"""Submissions: what a method hands in to be scored (see ``docs/submission.md``).

Two containers hold the same content:

JSON ``{"psc6k_submission": 1, "method": str, "kind": "flow" | "keypoints", "pairs": [...]}``
    each pair ``{"photo", "sketch", "sketch_to_photo", "photo_to_sketch"}`` (flows optionally
    with ``"sketch_to_photo_confidence"``, ``"photo_to_sketch_confidence"``, ``H x W``); for
    ``flow`` the two fields are H x W x 2 nested lists (SPEC §5: normalised (u, v),
    ``align_corners=True``, laid on the source grid), for ``keypoints`` 8 x 2 lists of predicted
    pixel (x, y). May be gzipped.
NPZ  arrays ``photo``, ``sketch`` (str, N), ``sketch_to_photo``, ``photo_to_sketch`` (float16/32/64,
    ``[N, H, W, 2]`` or ``[N, 8, 2]``), optional ``method``, ``kind`` and the two
    ``*_confidence`` arrays ``[N, H, W]``; never unpickled.

One module per concept:

=========================================  ==================================================
:mod:`psc6k.submission.model`              :class:`Submission`, :class:`ReadLimits`, the
                                           format's constants, :func:`identity_flow`
:mod:`psc6k.submission.files`              :func:`load_submission` (container by its first
                                           bytes), :func:`save_submission`
:mod:`psc6k.submission.json_reader`        the JSON reader (streamed; numbers by msgspec)
:mod:`psc6k.submission.npz_reader`         the NPZ reader (headers before data; no pickle)
:mod:`psc6k.submission.checks`             value checks every container passes
:mod:`psc6k.submission.align`              :func:`align_submission` (pairs -> annotation rows)
=========================================  ==================================================
"""

from psc6k.submission.align import align_submission
from psc6k.submission.checks import check_values
from psc6k.submission.files import load_submission, save_submission
from psc6k.submission.model import (CONFIDENCE_FIELDS, DEFAULT_MAX_DECOMPRESSED, DIRECTIONS, FLOAT_DTYPES, GZIP_MAGIC,
                                    KINDS, MAX_ABS_VALUE, MAX_FLOW_SIDE, MAX_PAIRS, MAX_STRING_CHARS,
                                    SUBMISSION_VERSION, ZIP_MAGICS, ReadLimits, Submission, SubmissionTooLarge,
                                    identity_flow)
from psc6k.submission.npz_reader import MAX_NPY_HEADER, MAX_NPZ_MEMBERS

__all__ = [
    "CONFIDENCE_FIELDS", "DEFAULT_MAX_DECOMPRESSED", "DIRECTIONS", "FLOAT_DTYPES", "GZIP_MAGIC", "KINDS",
    "MAX_ABS_VALUE", "MAX_FLOW_SIDE", "MAX_NPY_HEADER", "MAX_NPZ_MEMBERS", "MAX_PAIRS", "MAX_STRING_CHARS",
    "SUBMISSION_VERSION", "ZIP_MAGICS", "ReadLimits", "Submission", "SubmissionTooLarge", "align_submission",
    "check_values", "identity_flow", "load_submission", "save_submission",
]
