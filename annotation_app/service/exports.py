"""Exports: the raw clicks (CSV / JSON lines) and the aggregated ground truth (3-sigma rule)
as PSC6K CSVs, a zip of them, or COCO-keypoints JSON."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from psc6k import NUM_KEYPOINTS
from psc6k.formats import clicks_to_csv_text
from psc6k.groundtruth import GroundTruth, ground_truth_from_clicks
from psc6k.jsonsafe import strict_dumps

from .. import db
from ..export import to_coco
from .admin_stats import click_rows
from .speed import server_rt_ms, session_speeds
from .store import iso

T, P = db.tasks, db.pairs


@dataclass
class ExportFile:
    """A download: its bytes, media type and file name."""

    content: bytes
    media_type: str
    filename: str


class Exports:
    def __init__(self, store):
        self.store = store

    def clicks_frame(self, *, include_all: bool = False):
        """Raw clicks as a DataFrame with psc6k.formats.CLICK_COLUMNS (+ display, and with
        ``include_all`` the catch-trial and flagged clicks plus ``kind`` and ``excluded``)."""
        import pandas as pd

        with self.store.read.connect() as conn:
            rows = click_rows(conn, include_all=include_all)
            speeds = session_speeds(conn, self.store.config.min_median_response_ms)
        data = {"participant": [r.participant for r in rows], "photo": [r.photo for r in rows],
                "sketch": [r.sketch for r in rows], "keypoint": [int(r.keypoint) for r in rows],
                "x": [float(r.x) for r in rows], "y": [float(r.y) for r in rows],
                "rt_ms": [r.rt_ms for r in rows], "created_at": [iso(r.created_at) for r in rows],
                "display": [r.display_json or "" for r in rows],
                # measured by the server (service/speed.py); too_fast: the session is under the floor
                "server_rt_ms": [round(server_rt_ms(r.created_at, r.served_at), 1) for r in rows],
                "too_fast": [int(speeds.get(r.session_id, {}).get("too_fast", False)) for r in rows]}
        if include_all:
            data["kind"] = ["catch" if r.is_catch else "regular" for r in rows]
            data["excluded"] = [int(bool(r.excluded)) for r in rows]
        return pd.DataFrame(data)

    def clicks_file(self, fmt: str = "csv", *, include_all: bool = False) -> ExportFile:
        """``csv`` (written by psc6k.formats) or ``jsonl`` (``display`` as an object)."""

        frame = self.clicks_frame(include_all=include_all)
        if fmt == "csv":
            return ExportFile(clicks_to_csv_text(frame).encode("utf-8"), "text/csv", "clicks.csv")
        lines = []
        for rec in frame.to_dict(orient="records"):
            rec["display"] = json.loads(rec["display"]) if rec["display"] else None
            lines.append(strict_dumps(rec) + "\n")  # a click without rt_ms: null, never NaN
        return ExportFile("".join(lines).encode("utf-8"), "application/x-ndjson", "clicks.jsonl")

    def aggregate(self, n_sigma: float = 3.0) -> GroundTruth:
        """The counted clicks through :func:`psc6k.groundtruth.ground_truth_from_clicks` for the
        study's (non-catch) pairs: annotations of the complete pairs and the report (with the
        sessions under the speed floor, :meth:`speed_report`)."""
        clicks = self.clicks_frame()
        with self.store.read.connect() as conn:
            prs = conn.execute(select(P).where(P.c.id.in_(select(T.c.pair_id).where(T.c.is_catch == False)))  # noqa: E712
                               .order_by(P.c.id)).all()
        sketch_kps = np.array([json.loads(p.sketch_kps_json) for p in prs], dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
        return ground_truth_from_clicks(clicks, [p.photo for p in prs], [p.sketch for p in prs], sketch_kps,
                                        categories=self.store.config.categories or None, n_sigma=n_sigma,
                                        extra=self.speed_report(clicks))

    def speed_report(self, clicks) -> dict:
        """What the aggregate report says about sessions under the speed floor: they are kept in
        the ground truth (nothing is dropped silently); the researcher sees which and how many."""
        fast = sorted(set(clicks.loc[clicks["too_fast"] == 1, "participant"])) if len(clicks) else []
        return {"min_median_response_ms": self.store.config.min_median_response_ms,
                "too_fast_participants": fast,
                "too_fast_clicks": int((clicks["too_fast"] == 1).sum()) if len(clicks) else 0}

    def ground_truth_file(self, fmt: str = "psc6k", n_sigma: float = 3.0) -> ExportFile:
        """``psc6k``: a zip of test_pairs_ps.csv, test_pairs_st.csv and aggregate_report.json;
        ``ps`` / ``st``: one CSV; ``coco``: COCO-keypoints JSON."""

        gt = self.aggregate(n_sigma)
        if fmt == "coco":
            return ExportFile(strict_dumps(to_coco(gt.annotations, gt.report)).encode("utf-8"), "application/json",
                              "psc6k_coco.json")
        with tempfile.TemporaryDirectory() as tmp:
            files = gt.write(tmp)
            if fmt in ("ps", "st"):
                return ExportFile(Path(tmp, f"test_pairs_{fmt}.csv").read_bytes(), "text/csv", f"test_pairs_{fmt}.csv")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in files:
                    zf.write(path, path.name)
        return ExportFile(buf.getvalue(), "application/zip", "psc6k_annotations.zip")
