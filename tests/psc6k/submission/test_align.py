"""Alignment (psc6k/submission/align.py): submitted pairs -> annotation rows."""

import numpy as np
import pytest

from psc6k.errors import SubmissionError
from psc6k.pck import evaluate
from psc6k.submission import Submission, align_submission, identity_flow


def test_alignment_missing_and_unknown_pairs(ann, flow_sub):
    part = Submission("p", "flow", flow_sub.photo[:5], flow_sub.sketch[:5], flow_sub.sketch_to_photo[:5],
                      flow_sub.photo_to_sketch[:5])
    with pytest.raises(SubmissionError, match="7 of 12 annotated pairs are missing"):
        align_submission(part, ann)
    ai, si = align_submission(part, ann, allow_partial=True)
    assert ai.tolist() == [0, 1, 2, 3, 4]
    res = evaluate(ann, part, allow_partial=True, n_bootstrap=0)
    assert res.n_pairs == 5 and res.coverage == pytest.approx(5 / 12)
    stranger = Submission("s", "flow", ["x/photo/y/airplane/z.jpg"], ["x/sketch/y/airplane/z-1.png"],
                          identity_flow(1, 4), identity_flow(1, 4))
    with pytest.raises(SubmissionError, match="1 pair\\(s\\) are not in the annotations"):
        align_submission(stranger, ann, allow_partial=True)


def test_order_of_pairs_does_not_matter(ann, flow_sub):
    perm = np.random.default_rng(5).permutation(len(ann))
    shuffled = Submission("noisy", "flow", [flow_sub.photo[i] for i in perm], [flow_sub.sketch[i] for i in perm],
                          flow_sub.sketch_to_photo[perm], flow_sub.photo_to_sketch[perm])
    assert evaluate(ann, shuffled).to_dict() == evaluate(ann, flow_sub).to_dict()
