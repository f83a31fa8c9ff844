"""Value checks every container passes through: shapes, dtypes, finiteness, magnitude, duplicates.

Errors name the pair and the field; arrays are scanned in blocks of pairs so that no full-size
temporary is made.
"""

from __future__ import annotations

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import SubmissionError
from psc6k.submission.model import (CONFIDENCE_FIELDS, DIRECTIONS, FLOAT_DTYPES, KINDS, MAX_ABS_VALUE, Submission,
                                    short)


def _block_rows(arr: np.ndarray) -> int:
    per_row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * 8)
    return max(1, (16 * 1024**2) // per_row)


def _count_nonfinite_rows(block: np.ndarray) -> int:
    return int((~np.isfinite(block.reshape(len(block), -1))).any(axis=1).sum())


def check_values(sub: Submission, source) -> None:
    """Shapes, dtypes, finiteness and magnitude of every array; errors name the pair and field.

    Scans in blocks of pairs so that no full-size temporary is made.
    """
    n = len(sub.photo)
    if n == 0:
        raise SubmissionError("no pairs (expected at least one)", source=source, field="pairs")
    if len(sub.sketch) != n:
        raise SubmissionError(f"{len(sub.photo)} photos but {len(sub.sketch)} sketches", source=source)
    if sub.kind not in KINDS:
        raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {short(sub.kind)}", source=source,
                              field="kind")
    arrays = {d: getattr(sub, d) for d in DIRECTIONS}
    if sub.confidence is not None:
        if sub.kind != "flow":
            raise SubmissionError("confidence is only defined for flow submissions", source=source,
                                  field=CONFIDENCE_FIELDS["sketch_to_photo"])
        if set(sub.confidence) != set(DIRECTIONS):
            raise SubmissionError(f"confidence must give both directions {list(DIRECTIONS)} or neither, got "
                                  f"{sorted(map(str, sub.confidence))}", source=source,
                                  field=CONFIDENCE_FIELDS["sketch_to_photo"])
        arrays.update({CONFIDENCE_FIELDS[d]: sub.confidence[d] for d in DIRECTIONS})
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype not in FLOAT_DTYPES:
            raise SubmissionError(f"expected float16, float32 or float64 values, got dtype {arr.dtype}"
                                  + (" (convert with .astype(np.float32))" if arr.dtype.kind in "iub" else ""),
                                  source=source, field=name)
        if name in DIRECTIONS:
            if sub.kind == "flow":
                if arr.ndim != 4 or arr.shape[-1] != 2 or arr.shape[1] < 2 or arr.shape[2] < 2:
                    raise SubmissionError(f"expected shape [N, H, W, 2] with H, W >= 2, got {list(arr.shape)}",
                                          source=source, field=name)
            elif arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 2):
                raise SubmissionError(f"expected shape [N, {NUM_KEYPOINTS}, 2], got {list(arr.shape)}",
                                      source=source, field=name)
        else:
            flow = np.asarray(arrays[name[: -len("_confidence")]])
            if arr.shape != flow.shape[:-1]:
                raise SubmissionError(f"expected shape {list(flow.shape[:-1])} (the flow's [N, H, W]), got "
                                      f"{list(arr.shape)}", source=source, field=name)
        if arr.shape[0] != n:
            raise SubmissionError(f"has {arr.shape[0]} entries for {n} pairs", source=source, field=name)
        step = _block_rows(arr)
        for lo in range(0, n, step):
            block = arr[lo:lo + step].reshape(min(step, n - lo), -1)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                i = lo + int(np.flatnonzero(~finite)[0])
                total = sum(_count_nonfinite_rows(arr[k:k + step]) for k in range(0, n, step))
                raise SubmissionError(f"contains NaN or Inf ({total} pair(s) affected); all values must be finite",
                                      source=source, field=name, pair=(sub.photo[i], sub.sketch[i]))
            if arr.dtype.itemsize == 2:  # every finite float16 is within +-65504
                continue
            big = (block > MAX_ABS_VALUE).any(axis=1) | (block < -MAX_ABS_VALUE).any(axis=1)
            if big.any():
                i = lo + int(np.flatnonzero(big)[0])
                raise SubmissionError(f"contains values beyond +-{MAX_ABS_VALUE:g}; expected normalised flow "
                                      "values or pixel coordinates", source=source, field=name,
                                      pair=(sub.photo[i], sub.sketch[i]))
    a, b = np.asarray(sub.sketch_to_photo), np.asarray(sub.photo_to_sketch)
    if sub.kind == "flow" and a.shape != b.shape:
        raise SubmissionError(f"sketch_to_photo has shape {list(a.shape)} but photo_to_sketch "
                              f"{list(b.shape)}; all flows of a submission must share one size", source=source,
                              field="photo_to_sketch")
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(sub.photo, sub.sketch)):
        if pair in seen:
            raise SubmissionError(f"duplicate pair (entries {seen[pair]} and {i})", source=source, pair=pair)
        seen[pair] = i
