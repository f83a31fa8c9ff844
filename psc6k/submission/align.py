"""Alignment: which annotation row each submitted pair is scored against."""

from __future__ import annotations

import numpy as np

from psc6k.errors import SubmissionError
from psc6k.submission.model import Submission


def align_submission(sub: Submission, ann, *, allow_partial: bool = False):
    """Match a submission's pairs to annotation rows.

    Returns
    -------
    ann_idx, sub_idx : ndarray of int
        ``ann_idx[k]`` is the annotation row scored with submission entry ``sub_idx[k]``,
        ordered by annotation row.

    Raises
    ------
    SubmissionError
        Pairs not in the annotations (always), or annotation pairs the submission lacks
        (unless ``allow_partial``); the message gives the count and the first few.
    """
    index = ann.index()
    hits = [index.get(pair, -1) for pair in zip(sub.photo, sub.sketch)]
    unknown = [i for i, h in enumerate(hits) if h < 0]
    if unknown:
        first = ", ".join(f"(photo={sub.photo[i]!r}, sketch={sub.sketch[i]!r})" for i in unknown[:3])
        raise SubmissionError(f"{len(unknown)} pair(s) are not in the annotations {ann.source or ''}: "
                              f"{first}{' ...' if len(unknown) > 3 else ''}; paths must match the CSV exactly")
    sub_idx = np.asarray(hits, dtype=np.int64)
    order = np.argsort(sub_idx, kind="stable")
    ann_idx, sub_idx = sub_idx[order], order.astype(np.int64)
    if len(ann_idx) < len(ann) and not allow_partial:
        covered = np.zeros(len(ann), dtype=bool)
        covered[ann_idx] = True
        missing = np.flatnonzero(~covered)
        first = ", ".join(f"(photo={ann.photo[i]!r}, sketch={ann.sketch[i]!r})" for i in missing[:3])
        raise SubmissionError(f"{len(missing)} of {len(ann)} annotated pairs are missing: {first}"
                              f"{' ...' if len(missing) > 3 else ''} (`allow_partial` scores the rest)", param="allow_partial")
    return ann_idx, sub_idx
