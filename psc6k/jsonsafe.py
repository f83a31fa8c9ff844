"""JSON output helpers shared by the CLIs and the servers."""

from __future__ import annotations

import json
import math

import numpy as np


def json_safe(value):
    """Recursively turn numpy scalars into Python numbers and NaN / inf into ``None``.

    JSON has no NaN; a reply or a ``--json`` line must never fail to encode or emit ``NaN``.

    >>> json_safe({"a": [1.0, float("nan")], "b": np.float32(2.5)})
    {'a': [1.0, None], 'b': 2.5}
    """
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)`` that can never write ``NaN`` / ``Infinity``
    (strict JSON readers such as ``jq`` and Node reject them): non-finite numbers become
    ``null``; ``kwargs`` go to ``json.dumps``.

    >>> strict_dumps({"rt_ms": float("nan"), "x": np.float64(1.5)})
    '{"rt_ms": null, "x": 1.5}'
    """
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
