"""psc6k: the PSC6K photo-sketch correspondence benchmark toolkit.

The core package needs only numpy/scipy/scikit-learn/opencv/pandas; it never imports torch or
the web stack, and names none of the parts that build on it (the annotation app, the scoring
server, the model zoo): their commands plug into ``psc6k`` through entry points (:mod:`psc6k.cli`).

The Python API is importable from here (``from psc6k import PSC6KEval``); importing ``psc6k``
itself stays cheap: each name loads its module on first use.
"""

import importlib

__version__ = "0.1.0"

#: Side of every Sketchy image in pixels; PCK thresholds are ``alpha * IMAGE_SIZE``.
IMAGE_SIZE = 256
#: Keypoints per sketch in PSC6K.
NUM_KEYPOINTS = 8

#: Public names loaded on first access (module ``__getattr__``, PEP 562): ``import psc6k`` stays cheap.
_LAZY = {"PSC6KEval": "psc6k.pckeval"}

__all__ = ["IMAGE_SIZE", "NUM_KEYPOINTS", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'psc6k' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
