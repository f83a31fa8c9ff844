"""The scoring service of the server: exactly ``psc6k eval``'s code path, and no HTTP.

:func:`psc6k.submission.load_submission` validates, :func:`psc6k.pck.evaluate` scores and
``EvalResult.to_dict()`` is the reply, with the defaults of ``psc6k eval`` (alphas 0.05 and
0.10, no partial submissions, 1000 bootstrap resamples, seed 0). Nothing here recomputes or
re-validates a number. Errors are :mod:`psc6k.errors` classes (the web layer's table maps them);
receiving the body and admitting it to a scoring slot are the web layer's
(:mod:`psc6k_web.uploads`, wired in ``routers/score.py``).

What a private (hidden) split's reply may reveal is decided in one place,
:func:`evaluation.server.private.private_reply`, called by :meth:`ScoringService.private_reply`
(and :meth:`ScoringService.alignment_error` words the refusals).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from psc6k.errors import SubmissionError, TooLargeError
from psc6k.formats import read_annotations
from psc6k.jsonsafe import json_safe
from psc6k.pck import DEFAULT_ALPHAS, SCORER_VERSION, evaluate
from psc6k.submission import ReadLimits, align_submission, load_submission
from psc6k.text import check_text

from . import private
from .body import RawUpload
from .settings import ServerSettings

log = logging.getLogger("psc6k.server")

@dataclass
class Scored:
    result: dict  # the reply body (before submission_id), already private-filtered if needed
    method: str
    kind: str


class ScoringService:
    """The annotations of one server process and the scoring of submissions against them."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.annotations = read_annotations(settings.annotations)
        # Messages name the file, not where it lives on the server.
        self.annotations.source = os.path.basename(settings.annotations)
        with open(settings.annotations, "rb") as fh:
            self.annotations_sha256 = hashlib.sha256(fh.read()).hexdigest()
        self.scorer_version = SCORER_VERSION

    def read(self, raw: RawUpload):
        """The one reader, with this server's limits (SubmissionError 422, TooLargeError 413)."""
        settings = self.settings
        try:
            # at most one entry per annotated pair (+1, so that an extra pair is named by the alignment):
            # more is refused while parsing, which bounds the CPU a request can cost
            limits = ReadLimits(max_bytes=settings.max_decompressed_bytes, max_side=settings.max_flow_side,
                                max_pairs=len(self.annotations) + 1)
            sub = load_submission(raw.file, source=raw.filename, limits=limits)
        except MemoryError:
            raise TooLargeError("submission too large to load in memory") from None
        except (ValueError, OverflowError, TypeError, RecursionError, KeyError, IndexError) as exc:
            if isinstance(exc, SubmissionError):
                raise
            # load_submission should turn every bad input into SubmissionError; never let a gap
            # there become a 500 (the traceback is logged for the maintainers).
            log.warning("load_submission raised %s instead of SubmissionError", type(exc).__name__, exc_info=True)
            raise SubmissionError(f"cannot read the submission ({type(exc).__name__}: {str(exc)[:200]})",
                                  source=raw.filename) from None
        check_text(sub.method, "method")  # shown on the board: the one text rule
        return sub

    def score(self, raw: RawUpload) -> Scored:
        """Read and score ``raw`` (CPU work: call it in a worker thread)."""
        settings = self.settings
        sub = self.read(raw)
        try:
            align_submission(sub, self.annotations)
        except SubmissionError:  # the server's own message: no pair of a hidden split, no CLI hint
            raise SubmissionError(self.alignment_error(sub), field="pairs") from None
        try:
            res = evaluate(self.annotations, sub, DEFAULT_ALPHAS, allow_partial=False,
                           n_bootstrap=settings.n_bootstrap, seed=settings.seed)
        except MemoryError:
            raise TooLargeError("submission too large to score in memory") from None
        full = json_safe(res.to_dict())
        reply = self.private_reply(full) if settings.private else dict(full)
        return Scored(result=reply, method=sub.method, kind=sub.kind)

    # -- what a private split's reply may reveal (the one place) ----------------------------------
    def private_reply(self, full: dict) -> dict:
        """The reply of a private split from the full result: :func:`.private.private_reply`
        (rounded PCK and counts only; docs/server.md, "Private mode")."""
        return private.private_reply(full)

    def alignment_error(self, sub) -> str:
        """Why ``sub``'s pairs are not the split's. A private split's message names only the
        submitter's own pairs, never one of the hidden split."""
        ann = self.annotations
        index = ann.index()
        submitted = list(zip(sub.photo, sub.sketch))
        split = "the hidden split" if self.settings.private else f"the annotations {ann.source}"
        unknown = [p for p in submitted if p not in index]
        if unknown:
            first = ", ".join(f"(photo={p!r}, sketch={s!r})" for p, s in unknown[:3])
            return (f"{len(unknown)} submitted pair(s) are not in {split}: {first}"
                    f"{' ...' if len(unknown) > 3 else ''}; paths must match the published pair list exactly")
        have = set(submitted)
        missing = [p for p in zip(ann.photo, ann.sketch) if p not in have]
        text = f"{len(missing)} of {len(ann)} pairs of {split} are missing from the submission"
        if not self.settings.private:
            text += ": " + ", ".join(f"(photo={p!r}, sketch={s!r})" for p, s in missing[:3])
            text += " ..." if len(missing) > 3 else ""
        return text + "; this server scores complete submissions only"
