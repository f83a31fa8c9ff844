"""Fixtures of the submission tests: 12 annotated pairs and a noisy flow submission for them."""

import numpy as np
import pytest

from psc6k.submission import Submission, identity_flow
from psc6k.testing import make_annotations


@pytest.fixture
def ann():
    return make_annotations(n_pairs=12, seed=1)


@pytest.fixture
def flow_sub(ann):
    rng = np.random.default_rng(0)
    f = identity_flow(len(ann), 8) + rng.normal(0, 0.05, (len(ann), 8, 8, 2))
    return Submission("noisy", "flow", ann.photo, ann.sketch, f, f[:, ::-1].copy())
