"""Shared fixtures. Area-specific fixtures live in each area's own test files."""

from __future__ import annotations

import numpy as np
import pytest

from psc6k.formats import Annotations
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath


def make_annotations(n_pairs: int = 20, seed: int = 0, categories=SKETCHY_CATEGORIES[:5]) -> Annotations:
    """Random annotations on real Sketchy category names, `n_pairs` pairs spread over categories."""
    rng = np.random.default_rng(seed)
    photo, sketch = [], []
    for i in range(n_pairs):
        cat = categories[i % len(categories)]
        photo.append(photo_relpath(cat, f"n0000_{i // 2}"))
        sketch.append(sketch_relpath(cat, f"n0000_{i // 2}-{i % 2 + 1}"))
    pk = rng.uniform(0, 255, (n_pairs, 8, 2)).round(2)
    sk = rng.uniform(0, 255, (n_pairs, 8, 2)).round(2)
    return Annotations.from_arrays(photo, sketch, pk, sk)


@pytest.fixture
def small_annotations() -> Annotations:
    return make_annotations()
