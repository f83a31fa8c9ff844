"""A ``COCOeval``-shaped API over :func:`psc6k.pck.evaluate`.

>>> ev = PSC6KEval("test_pairs_ps.csv", "submission.npz")   # doctest: +SKIP
>>> ev.evaluate()                                             # doctest: +SKIP
>>> ev.summarize()                                            # doctest: +SKIP
 PCK@0.05 (12.8 px) | all pairs | both directions = 56.38
 ...
"""

from __future__ import annotations

import sys

from psc6k.formats import Annotations, read_annotations
from psc6k.pck import DEFAULT_ALPHAS, EvalResult, evaluate, format_table
from psc6k.submission import Submission, load_submission


class PSC6KEval:
    """Load ground truth, load results, evaluate, summarize — with per-category breakdowns.

    Parameters
    ----------
    gt : Annotations or path to ``test_pairs_ps.csv`` / ``test_pairs_st.csv``
    dt : Submission or path to a submission (JSON, gzip JSON, NPZ)
    alphas : sequence of float
    allow_partial : bool
    """

    def __init__(self, gt, dt, alphas=DEFAULT_ALPHAS, *, allow_partial=False, n_bootstrap=1000, seed=0):
        self.gt: Annotations = gt if isinstance(gt, Annotations) else read_annotations(gt)
        self.dt: Submission = dt if isinstance(dt, Submission) else load_submission(dt)
        self.alphas = tuple(alphas)
        self.allow_partial, self.n_bootstrap, self.seed = allow_partial, n_bootstrap, seed
        self.result: EvalResult | None = None

    def evaluate(self) -> EvalResult:
        self.result = evaluate(self.gt, self.dt, self.alphas, allow_partial=self.allow_partial,
                               n_bootstrap=self.n_bootstrap, seed=self.seed)
        return self.result

    @property
    def stats(self) -> dict:
        if self.result is None:
            raise RuntimeError("call evaluate() first")
        return self.result.overall

    def summarize(self, file=None, *, categories: bool = True) -> str:
        text = format_table(self.result if self.result is not None else self.evaluate(), categories=categories)
        print(text, file=file or sys.stdout)
        return text
