"""What a reply about the hidden split may reveal (``psc6k serve --private``).

A scoring server is an oracle on its hidden keypoints: every reply is a function of them. A
continuous aggregate such as the mean pixel error moves with every coordinate of every hidden
keypoint, so a few probes that differ in one predicted keypoint invert it: four submissions with
one keypoint at +-1e6 on x and on y, differenced, gave a hidden keypoint to four decimals. What
a private reply keeps is only what changes in steps a single keypoint cannot cross on its own:

* PCK values (overall and per direction), rounded to the nearest multiple of ``pck_step``
  percentage points, a step worth at least :data:`MIN_KEYPOINTS_PER_STEP` keypoints of one
  direction (and never below :data:`MIN_PCK_STEP`); the step is part of the reply;
* counts and protocol facts that do not depend on the hidden coordinates (``n_pairs``,
  ``n_annotated``, ``coverage``, ``protocol``, ``scorer_version``, ``method``, ``kind``).

Dropped: ``mean_error_px`` (continuous), ``ci95`` (a bootstrap over per-pair values: more
rounded numbers that move with single keypoints), ``per_category`` and anything per pair.
docs/server.md ("Private mode") works out how many submissions one hidden keypoint still costs.
"""

from __future__ import annotations

import math

from psc6k import NUM_KEYPOINTS

#: The keys a private reply may carry (plus ``pck_step``); everything else is dropped.
PRIVATE_KEYS = ("method", "kind", "overall", "per_direction", "n_pairs", "n_annotated", "coverage", "protocol",
                "scorer_version", "pck_step")
#: Smallest rounding step of a private PCK value, in percentage points.
MIN_PCK_STEP = 0.1
#: A step is worth at least this many keypoints of one direction, so that moving one keypoint
#: changes a rounded value only when the rest of the submission sits exactly on a step edge.
MIN_KEYPOINTS_PER_STEP = 4
_NICE = (1.0, 2.0, 5.0)


def pck_step(n_pairs: int) -> float:
    """Rounding step (percentage points) of private PCK values for a split of ``n_pairs``.

    The smallest of 0.1, 0.2, 0.5, 1, 2, 5, 10, ... that is at least
    ``MIN_KEYPOINTS_PER_STEP`` keypoints of one direction (``100 * 4 / (8 * n_pairs)``).

    >>> pck_step(6250), pck_step(40), pck_step(12)
    (0.1, 2.0, 5.0)
    """
    need = max(MIN_PCK_STEP, 100.0 * MIN_KEYPOINTS_PER_STEP / (NUM_KEYPOINTS * max(1, n_pairs)))
    decade = 10.0 ** math.floor(math.log10(need))
    for base in _NICE + (10.0,):
        if base * decade >= need * (1 - 1e-12):
            return round(base * decade, 10)
    raise AssertionError("unreachable")


def _rounded(value, step: float):
    if value is None or not math.isfinite(value):
        return None
    return round(round(value / step) * step, 6)


def private_reply(result: dict) -> dict:
    """The reply of a private server: ``result`` (``EvalResult.to_dict()``, JSON-safe) reduced to
    :data:`PRIVATE_KEYS`, PCK values rounded to :func:`pck_step` of the split's size.

    Parameters
    ----------
    result : dict
        ``psc6k eval --json`` of the whole hidden split (``n_annotated`` pairs).

    Returns
    -------
    dict
        A new dict; ``result`` is not modified.
    """
    step = pck_step(int(result.get("n_annotated") or result.get("n_pairs") or 1))
    out = {k: result[k] for k in PRIVATE_KEYS if k in result}
    if isinstance(result.get("overall"), dict):
        out["overall"] = {k: _rounded(v, step) for k, v in result["overall"].items()}
    if isinstance(result.get("per_direction"), dict):
        out["per_direction"] = {d: {k: _rounded(v, step) for k, v in row.items()}
                                for d, row in result["per_direction"].items()}
    out["pck_step"] = step
    return out
