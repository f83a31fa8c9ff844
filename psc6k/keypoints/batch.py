"""The keypoint batch: many sketches through :func:`psc6k.keypoints.analyze_sketch`, in worker
processes, one result record per sketch (``psc6k build-keypoints``).

* :func:`process_one` — one sketch -> a JSON-able record (keypoints, diagnostics, or the reason
  it failed; a failing sketch never stops the batch);
* :func:`build_keypoints` — the driver: records in input order, a progress bar, a dead worker
  turned into :class:`~psc6k.keypoints.inflight.WorkerDied`;
* :func:`write_outputs` — the journal of a run -> the keypoints CSV, the report CSV and the summary.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
from tqdm import tqdm

from psc6k.formats import KEYPOINT_COLUMNS, format_list
from psc6k.keypoints._morphology import single_threaded_process
from psc6k.keypoints.errors import SketchError
from psc6k.keypoints.inflight import InFlightBoard, WorkerDied
from psc6k.keypoints.io import load_sketch
from psc6k.keypoints.journal import Journal, write_csv_atomically
from psc6k.keypoints.pipeline import analyze_sketch
from psc6k.keypoints.quality import n_parts_connected
from psc6k.keypoints.strips import render_strip, viz_path
from psc6k.parallel import map_ordered, resolve_workers

__all__ = ["REPORT_COLUMNS", "build_keypoints", "process_one", "write_outputs"]

#: One --report row per sketch, in input order.
REPORT_COLUMNS = ("sketch", "status", "width", "height", "mask_px", "dilations", "max_dilations",
                  "pieces_joined", "dust_components", "stray_marks", "ink_px_set_aside",
                  "parts_connected", "keypoints_moved", "error")


def process_one(task) -> dict:
    """Worker: ``(key, path, options, viz_path[, board])`` -> one result record (JSON-able dict).

    ``options`` holds ``seed``, ``max_dilations``, ``stray_gap``, ``close_gaps``.  The record
    has ``sketch``, ``status`` (``"ok"`` or a :class:`SketchError` reason), the ``--report``
    fields, ``keypoints`` ([8, 2] list, 3 decimals) when ok, ``error`` when not.  ``board`` is
    ``(path, index)`` of an :class:`InFlightBoard` slot, marked started and finished.
    """
    key, path, opt, viz_file, *board = task
    if board and board[0] is not None:
        InFlightBoard.mark(*board[0], InFlightBoard.STARTED)
        try:
            return _process(key, path, opt, viz_file)
        finally:
            InFlightBoard.mark(*board[0], InFlightBoard.FINISHED)
    return _process(key, path, opt, viz_file)


def _process(key, path, opt, viz_file) -> dict:
    if multiprocessing.parent_process() is not None:  # a pool worker: one thread, for good
        single_threaded_process()

    try:
        gray = load_sketch(path)
        res = analyze_sketch(gray, 8, opt["seed"], max_dilations=opt["max_dilations"],
                               stray_gap=opt["stray_gap"], close_gaps_px=opt["close_gaps"])
    except SketchError as exc:
        return {"sketch": key, "status": exc.reason, "error": exc.detail}
    except MemoryError:
        return {"sketch": key, "status": "error", "error": "out of memory"}
    except Exception as exc:  # a bug must not stop a 75k-sketch batch; it is reported per sketch
        return {"sketch": key, "status": "error", "error": f"internal error: {type(exc).__name__}: {exc}"}
    # 3 decimals (1/1000 px) keep the CSV readable; rounding cannot move a point off its pixel
    # by more than 0.0005 px
    out = {"sketch": key, "status": "ok", "keypoints": res.keypoints.round(3).tolist(),
           "width": int(gray.shape[1]), "height": int(gray.shape[0]), "mask_px": int(res.mask.sum()),
           "dilations": int(res.dilation_iterations), "max_dilations": int(res.max_dilations),
           "pieces_joined": int(res.n_pieces) if res.dilation_iterations else 0,
           "dust_components": int(res.n_dust), "stray_marks": int(res.n_stray),
           "ink_px_set_aside": int(res.set_aside.sum()) if res.set_aside is not None else 0,
           "parts_connected": int(n_parts_connected(res.parts, 8)),
           "keypoints_moved": int(res.moved.sum())}
    if viz_file is not None:
        try:
            Path(viz_file).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(viz_file), render_strip(res)[:, :, ::-1]):
                raise OSError("cv2.imwrite failed")
        except Exception as exc:
            out["viz_error"] = f"{type(exc).__name__}: {exc}"
    return out


def build_keypoints(items, *, seed=0, workers=1, viz_dir=None, max_dilations=None, stray_gap=None,
                    close_gaps=0, progress=True, on_result=None):
    """Process ``(key, path)`` items; yields one result record per item, in input order.

    ``on_result(record)`` is called as each arrives (the command journals and reports there).

    Raises
    ------
    WorkerDied
        A worker process died (its sketch cannot be told from the pool's error; the ones in
        flight are named).  The records yielded before are complete.
    """
    opt = {"seed": seed, "max_dilations": max_dilations, "stray_gap": stray_gap, "close_gaps": close_gaps}
    pooled = resolve_workers(workers, len(items)) > 1
    try:
        board = InFlightBoard(len(items)) if pooled else None
    except OSError:  # no writable temporary folder: a dead worker's sketches go unnamed
        board = None
    tasks = [(key, str(path), opt, str(viz_path(Path(viz_dir), key)) if viz_dir is not None else None,
              board.slot(i) if board is not None else None)
             for i, (key, path) in enumerate(items)]
    n_done = 0
    try:
        with tqdm(total=len(tasks), unit="sketch", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for rec in map_ordered(process_one, tasks, workers):
                if on_result is not None:
                    on_result(rec)
                n_done += 1
                bar.update(1)
                yield rec
    except BrokenProcessPool:
        in_flight = [tasks[i][0] for i in board.started()] if board is not None else []
        raise WorkerDied(in_flight, n_done) from None
    finally:
        if board is not None:
            board.close()


def write_outputs(journal: Journal, out: Path, report: Path | None) -> dict:
    """Write the keypoints CSV ``out`` (and the ``report`` CSV) from the journal of a finished
    run, each whole or not at all; return the summary (counts of what the builder did)."""
    failures, reasons, dil = [], Counter(), Counter()
    totals = Counter()
    viz_errors = []

    def kp_rows():
        for rec in journal.records():
            totals["n"] += 1
            if rec["status"] != "ok":
                failures.append({"sketch": rec["sketch"], "reason": rec["status"], "error": rec["error"]})
                reasons[rec["status"]] += 1
                continue
            totals["ok"] += 1
            dil[rec["dilations"]] += 1
            for k in ("dust_components", "stray_marks", "ink_px_set_aside", "keypoints_moved"):
                totals[k] += rec[k]
            totals["with_marks"] += bool(rec["dust_components"] or rec["stray_marks"])
            if "viz_error" in rec:
                viz_errors.append({"sketch": rec["sketch"], "error": rec["viz_error"]})
            kps = rec["keypoints"]
            yield [rec["sketch"], format_list(p[0] for p in kps), format_list(p[1] for p in kps)]

    write_csv_atomically(out, KEYPOINT_COLUMNS, kp_rows())
    if report is not None:
        write_csv_atomically(report, REPORT_COLUMNS,
                          ([rec.get(c, "") for c in REPORT_COLUMNS] for rec in journal.records()))
    summary = {
        "n_sketches": totals["n"], "n_ok": totals["ok"], "n_failed": len(failures),
        "failures_by_reason": dict(sorted(reasons.items())), "failures": failures,
        "dilation_iterations": {str(k): v for k, v in sorted(dil.items())},
        "dilated": sum(v for k, v in dil.items() if k), "max_dilations_used": max(dil, default=0),
        "with_marks_set_aside": totals["with_marks"], "dust_components": totals["dust_components"],
        "stray_marks": totals["stray_marks"], "ink_px_set_aside": totals["ink_px_set_aside"],
        "keypoints_moved_onto_part": totals["keypoints_moved"],
    }
    if viz_errors:
        summary["viz_errors"] = viz_errors
    return summary
