"""Run a classical baseline (identity, affine, dense) on every annotated pair and write a flow
submission (SPEC §5, both directions) that ``psc6k eval`` scores.

identity: every pixel maps to itself. affine: the sketch's filled outline aligned with the
photo's object (GrabCut) by centroid and spread. dense: OpenCV DIS optical flow between distance
maps of photo edges and sketch strokes, coarse to fine, started from the affine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from psc6k.baselines import BASELINES, run_baseline
from psc6k.commands import add_dataset_arguments, resolve_dataset
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations
from psc6k.pck import evaluate
from psc6k.submission import save_submission

HELP = "run a classical baseline (identity, affine, dense) into a submission"
SECTION, ORDER = "methods", 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=BASELINES, help="which baseline")
    add_dataset_arguments(parser)
    parser.add_argument("--out", "-o", required=True, help="submission file to write (.npz, .json or .json.gz)")
    parser.add_argument("--eval", action="store_true", help="also score it and print PCK@0.05 / PCK@0.10")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (path, pairs, seconds, scores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.name.lower().endswith((".npz", ".json", ".json.gz")):
        raise Psc6kError(f"--out {out}: use a .npz, .json or .json.gz file name")
    ann_path, images = resolve_dataset(args.annotations, args.images)
    ann = read_annotations(ann_path)
    start = time.perf_counter()
    sub = run_baseline(args.name, ann, images, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    save_submission(sub, out)
    summary = {"method": sub.method, "out": str(out), "n_pairs": len(sub), "seconds": round(seconds, 3)}
    if args.eval:
        summary["overall"] = evaluate(ann, sub, n_bootstrap=0).overall
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        line = f"{sub.method}: {len(sub)} pairs in {seconds:.1f} s -> {out}"
        if "overall" in summary:
            line += "  " + "  ".join(f"{k.upper()} {v:.2f}" for k, v in summary["overall"].items())
        print(line)
    return 0
