"""A ``COCOeval``-shaped API over :func:`psc6k.pck.evaluate`: load ground truth, load results,
evaluate, summarize, with per-category breakdowns.

Importable from the package itself (``from psc6k import PSC6KEval``), so it works from any
repository, whatever its own folders are called.

>>> from psc6k import PSC6KEval
>>> from psc6k.data import sample_path
>>> from psc6k.formats import read_annotations
>>> from psc6k.submission import Submission, identity_flow
>>> ann = read_annotations(sample_path() / "test_pairs_ps.csv")
>>> flows = identity_flow(len(ann), 16)
>>> ev = PSC6KEval(ann, Submission("identity", "flow", ann.photo, ann.sketch, flows, flows), n_bootstrap=0)
>>> ev.evaluate().overall["pck@0.10"] == ev.stats["pck@0.10"]
True
>>> _ = ev.summarize(categories=False)
method: identity (flow)   pairs: 40/40   coverage: 100.0%   alpha: 0.05 -> 12.8 px, 0.1 -> 25.6 px
protocol: psc6k (distance <= threshold)   annotations sha256: 3c2b3748a6258ef5   psc6k-pck/1 (psc6k 0.1.0)
<BLANKLINE>
                            PCK@0.05    PCK@0.10    err px
----------------------------------------------------------
overall                         5.94       33.28     30.78
sketch_to_photo                 5.94       33.44     30.80
photo_to_sketch                 5.94       33.12     30.77
<BLANKLINE>
per keypoint index            0      1      2      3      4      5      6      7
PCK@0.05 sketch_to_photo    7.5    2.5    5.0    5.0    2.5    5.0    7.5   12.5
PCK@0.05 photo_to_sketch    7.5    2.5    5.0    5.0    2.5    5.0    7.5   12.5
PCK@0.10 sketch_to_photo   30.0   30.0   35.0   35.0   35.0   30.0   35.0   37.5
PCK@0.10 photo_to_sketch   30.0   27.5   32.5   35.0   32.5   30.0   37.5   40.0
>>> PSC6KEval(ann, ev.dt, protocol="sketchfusion").protocol
'sketchfusion'
"""

from __future__ import annotations

import sys

from psc6k.formats import Annotations, read_annotations
from psc6k.pck import DEFAULT_ALPHAS, EvalResult, evaluate, format_table
from psc6k.protocols import DEFAULT_PROTOCOL, get_protocol
from psc6k.submission import Submission, load_submission

__all__ = ["PSC6KEval"]


class PSC6KEval:
    """Load ground truth, load results, evaluate, summarize — with per-category breakdowns.

    Parameters
    ----------
    gt : Annotations or path
        The ground truth, or a path to ``test_pairs_ps.csv`` / ``test_pairs_st.csv``.
    dt : Submission or path
        The results, or a path to a submission (JSON, gzip JSON, NPZ).
    alphas : sequence of float
        PCK thresholds as fractions of the 256 px image side.
    allow_partial : bool
        Score the covered pairs only instead of refusing a submission with missing pairs.
    n_bootstrap, seed : int
        Bootstrap resamples for the confidence intervals (0: none) and their seed.
    protocol : str
        Named evaluation protocol (:mod:`psc6k.protocols`; ``psc6k protocols`` lists them):
        ``"psc6k"``, the paper's, by default.

    Attributes
    ----------
    result : EvalResult or None
        Set by :meth:`evaluate`.
    """

    def __init__(self, gt, dt, alphas=DEFAULT_ALPHAS, *, allow_partial=False, n_bootstrap=1000, seed=0,
                 protocol: str = DEFAULT_PROTOCOL):
        self.gt: Annotations = gt if isinstance(gt, Annotations) else read_annotations(gt)
        self.dt: Submission = dt if isinstance(dt, Submission) else load_submission(dt)
        self.alphas = tuple(alphas)
        self.allow_partial, self.n_bootstrap, self.seed = allow_partial, n_bootstrap, seed
        self.protocol = get_protocol(protocol).name
        self.result: EvalResult | None = None

    def evaluate(self) -> EvalResult:
        """Score ``dt`` against ``gt``; the result is kept in :attr:`result` and returned."""
        self.result = evaluate(self.gt, self.dt, self.alphas, allow_partial=self.allow_partial,
                               n_bootstrap=self.n_bootstrap, seed=self.seed, protocol=self.protocol)
        return self.result

    @property
    def stats(self) -> dict:
        """The overall numbers (``{"pck@0.10": ..., ...}``) of the last :meth:`evaluate`."""
        if self.result is None:
            raise RuntimeError("call evaluate() first")
        return self.result.overall

    def summarize(self, file=None, *, categories: bool = True) -> str:
        """Print the table (evaluating first if needed) to ``file`` (stdout) and return it."""
        text = format_table(self.result if self.result is not None else self.evaluate(), categories=categories)
        print(text, file=file or sys.stdout)
        return text
