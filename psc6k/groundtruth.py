"""From crowd clicks to the PSC6K ground truth: the one pipeline clicks -> 3-sigma aggregation ->
complete pairs -> report -> ``test_pairs_ps.csv`` / ``test_pairs_st.csv`` (SPEC §4 A.2).

``psc6k aggregate``, the annotation app's export and ``psc6k demo`` all call
:func:`ground_truth_from_clicks`, so the three write the same CSVs and the same report
(``aggregate_report.json``, keys in :data:`REPORT_KEYS`).

>>> import pandas as pd
>>> clicks = pd.DataFrame({"participant": ["a", "b", "c"] * 8, "photo": ["photo/cat/p.jpg"] * 24,
...                        "sketch": ["sketch/cat/s.png"] * 24, "keypoint": [k for k in range(8) for _ in range(3)],
...                        "x": [10.0, 11.0, 12.0] * 8, "y": [5.0] * 24})
>>> gt = ground_truth_from_clicks(clicks, ["photo/cat/p.jpg"], ["sketch/cat/s.png"], np.zeros((1, 8, 2)))
>>> gt.annotations.photo_kps[0, 0].tolist(), gt.report["pairs_written"], gt.report["n_rejected"]
([11.0, 5.0], 1, 0)
>>> list(gt.report) == list(REPORT_KEYS)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from psc6k.aggregate import ClickAggregate, CompletePairs, aggregate_clicks, human_agreement
from psc6k.formats import Annotations, write_test_pairs_ps, write_test_pairs_st
from psc6k.inputs import file_sha256
from psc6k.jsonsafe import json_safe, strict_dumps

#: File names written by :meth:`GroundTruth.write`, in this order.
PS_CSV, ST_CSV, REPORT_JSON = "test_pairs_ps.csv", "test_pairs_st.csv", "aggregate_report.json"

#: The report's keys, in order: :meth:`psc6k.aggregate.ClickAggregate.summary`, then the pipeline's.
REPORT_KEYS = (
    "n_clicks", "n_keypoints", "n_rejected", "rejected_fraction", "mu_sq_px", "sigma_sq_px",
    "threshold_sq_px", "n_sigma", "keypoints_fewer_than_2_kept", "keypoints_without_kept_click",
    "clicks_read", "clicks_dropped_excluded_or_catch", "clicks_of_pairs_not_listed",
    "pairs_listed", "pairs_written", "pairs_not_written", "keypoints_fewer_than_2_kept_list",
    "human_agreement", "outputs",
)


def counted_clicks(clicks: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The clicks that count: rows with ``excluded`` true (1 / true) or ``kind == "catch"`` left out.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Raw clicks (:func:`psc6k.formats.read_clicks`); ``excluded`` and ``kind`` are optional
        columns (the annotation app's ``include=all`` export).

    Returns
    -------
    counted : pandas.DataFrame
        The other rows, re-indexed from 0.
    n_dropped : int
    """
    drop = np.zeros(len(clicks), bool)
    if "excluded" in clicks.columns:
        drop |= clicks["excluded"].astype(str).str.strip().isin(["1", "true", "True"]).to_numpy()
    if "kind" in clicks.columns:
        drop |= (clicks["kind"].astype(str).str.strip() == "catch").to_numpy()
    return clicks[~drop].reset_index(drop=True), int(drop.sum())


@dataclass
class GroundTruth:
    """Result of :func:`ground_truth_from_clicks`.

    Attributes
    ----------
    annotations : psc6k.formats.Annotations
        The complete pairs (every keypoint kept a click), in the listed order.
    aggregate : psc6k.aggregate.ClickAggregate
        The 3-sigma aggregation of the counted clicks.
    pairs : psc6k.aggregate.CompletePairs
        Every listed pair, complete or not.
    report : dict
        JSON-ready, keys :data:`REPORT_KEYS` (then the caller's ``extra``); NaN written as ``null``.
    """

    annotations: Annotations
    aggregate: ClickAggregate
    pairs: CompletePairs
    report: dict

    def write(self, out) -> list[Path]:
        """Write ``test_pairs_ps.csv``, ``test_pairs_st.csv`` and ``aggregate_report.json`` into
        the folder ``out`` (created); returns their paths in that order. The annotations then
        carry ``source`` and ``sha256`` of the written ``test_pairs_ps.csv`` (the provenance a
        score of them records, as if read back from that file)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        ps, st, report = out / PS_CSV, out / ST_CSV, out / REPORT_JSON
        write_test_pairs_ps(self.annotations, ps)
        self.annotations.source, self.annotations.sha256 = str(ps), file_sha256(ps)
        write_test_pairs_st(self.annotations, st)
        report.write_text(self.report_json(), encoding="utf-8")
        return [ps, st, report]

    def report_json(self) -> str:
        """The report as the text of ``aggregate_report.json``."""
        return strict_dumps(self.report, indent=2)


def ground_truth_from_clicks(clicks: pd.DataFrame, photo, sketch, sketch_kps, *, categories=None,
                             n_sigma: float = 3.0, source: str | None = None, extra: dict | None = None) -> GroundTruth:
    """Aggregate crowd clicks into the ground truth of the listed pairs, with its report.

    Catch-trial and flagged clicks are left out (:func:`counted_clicks`); the others are
    aggregated with the 3-sigma rule (:func:`psc6k.aggregate.aggregate_clicks`) over the whole
    study, clicks of unlisted pairs included (they are counted in the report, never written).
    A listed pair with a keypoint that kept no click is left out of the annotations and listed
    in the report's ``pairs_not_written``.

    Parameters
    ----------
    clicks : pandas.DataFrame
        Raw clicks, columns at least ``photo, sketch, keypoint, x, y`` (photo pixels).
    photo, sketch : sequence of str, length N
        The pairs, in the order the CSVs list them.
    sketch_kps : array, shape (N, 8, 2)
        Their sketch keypoints (XB, YB), pixels.
    categories : sequence of str, optional
        The category list fixing the ``class`` column
        (:meth:`psc6k.formats.Annotations.from_arrays`).
    n_sigma : float
        Outlier threshold ``mu + n_sigma * sigma`` (3 in the paper).
    source : str, optional
        Names the annotations in later error messages.
    extra : dict, optional
        What the caller adds to the report, after :data:`REPORT_KEYS` (the annotation app: the
        sessions under its speed floor); it cannot replace one of them.

    Returns
    -------
    GroundTruth
    """
    n_read = len(clicks)
    clicks, n_dropped = counted_clicks(clicks)
    photo, sketch = list(photo), list(sketch)
    wanted = set(zip(photo, sketch))
    n_outside = sum((p, s) not in wanted for p, s in zip(clicks["photo"], clicks["sketch"]))
    agg = aggregate_clicks(clicks, n_sigma=n_sigma)
    pairs = agg.complete_pairs(photo, sketch, sketch_kps, categories=categories, source=source)
    few = agg.keypoints_with_fewer_than(2)
    report = agg.summary()
    report.update({
        "clicks_read": n_read, "clicks_dropped_excluded_or_catch": n_dropped,
        "clicks_of_pairs_not_listed": n_outside,
        "pairs_listed": len(photo), "pairs_written": int(pairs.complete.sum()),
        "pairs_not_written": pairs.incomplete(),
        "keypoints_fewer_than_2_kept_list": few[["photo", "sketch", "keypoint", "n_kept"]].to_dict(orient="records"),
        "human_agreement": human_agreement(clicks, kept=agg.kept) if len(clicks) else None,
        "outputs": [PS_CSV, ST_CSV],
    })
    clash = sorted(set(extra or {}) & set(REPORT_KEYS))
    if clash:
        raise ValueError(f"extra report keys {clash} would replace the pipeline's own")
    report.update(extra or {})
    return GroundTruth(pairs.annotations, agg, pairs, json_safe(report))
