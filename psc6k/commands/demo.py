"""Run the whole benchmark on the bundled sample and print the leaderboard.

Builds 8 keypoints per sketch, simulates 3 crowd clicks per keypoint, aggregates them with the
3-sigma rule into the PSC6K CSVs, runs the classical baselines (and PSCNet with --checkpoint),
scores everything by PCK and writes an HTML report (open OUT/report/index.html).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from psc6k.demo import DEFAULT_OUT, format_leaderboard, run_demo
from psc6k.errors import Psc6kError
from psc6k.report import format_pairwise

HELP = "run the whole benchmark on the bundled sample and print the leaderboard"
SECTION, ORDER = "results", 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", default=DEFAULT_OUT,
                        help="output folder (new, empty, or written by an earlier demo)")
    parser.add_argument("--checkpoint", default=None,
                        help="a PSCNet checkpoint to score too (needs torch: pip install 'psc6k[model]')")
    parser.add_argument("--device", default=None, help="torch device for PSCNet: cpu, cuda or cuda:N (not given: CUDA when available)")
    parser.add_argument("--sample", default=None,
                        help="a folder written by 'psc6k synth' to use instead of the bundled sample")
    parser.add_argument("--use-sample-clicks", action="store_true",
                        help="aggregate the sample's clicks.csv instead of building keypoints and simulating clicks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the keypoint builder and the simulated crowd")
    parser.add_argument("--examples", type=int, default=4, help="example pairs drawn in the report")
    parser.add_argument("--pairs", type=int, default=None, dest="max_pairs", metavar="N",
                        help="use only the first N pairs of the sample (quicker)")
    parser.add_argument("--json", action="store_true", help="print the result (leaderboard, paths, timings) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or step lines")


def run(args: argparse.Namespace) -> int:
    if args.examples < 0:
        raise Psc6kError("--examples must be >= 0")
    quiet = args.no_progress or args.json

    def log(msg):
        print(msg, file=sys.stderr)

    result = run_demo(args.out, checkpoint=args.checkpoint, device=args.device, sample=args.sample,
                      use_sample_clicks=args.use_sample_clicks, seed=args.seed, n_examples=args.examples,
                      max_pairs=args.max_pairs,
                      progress=not quiet, log=None if quiet else log, command=getattr(args, "command_line", None))
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print()
    print(format_leaderboard(result.leaderboard, result.human_agreement))
    if result.pairwise:
        print("\npaired comparisons (psc6k compare; delta = A - B in PCK points):")
        print(format_pairwise(result.pairwise))
    for note in result.notes:
        print(f"note: {note}")
    ann_csv = result.out / "annotations" / "test_pairs_ps.csv"
    for row in result.leaderboard:
        if str(row.get("method", "")).startswith("PSCNet-"):
            sub = result.out / "submissions" / f"{row['method']}.npz"
            print(f"score PSCNet again: psc6k eval {shlex.quote(str(sub))} --annotations {shlex.quote(str(ann_csv))}")
    print(f"\nreport: {result.report}  (open it in a browser)")
    print(f"done in {result.timings['total']:.1f} s")
    return 0
