"""Diagnose a low score: re-score a submission under every combination of the convention mistakes
of SPEC §9 (x/y swapped, directions exchanged, pixels instead of -1...1, transposed grid,
align_corners=False) and report the fixes that raise PCK, best first, in words and as NumPy.

Exit status: 0 when no fix gains more than 5 PCK points, 1 when one does (the submission is
probably in the wrong convention), 2 for an unreadable input. Example::

    psc6k doctor mine.npz --annotations PSC6K/test_pairs_ps.csv
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.commands import add_scoring_arguments, scoring_inputs
from psc6k.doctor import GAIN_THRESHOLD, diagnose, format_diagnosis
from psc6k.errors import Psc6kError
from psc6k.jsonsafe import json_safe
from psc6k.submission import load_submission

HELP = "find convention mistakes (x/y swap, directions, pixel units, ...) that explain a low score"
SECTION, ORDER = "score", 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", help="submission file: .json, .json.gz or .npz (docs/submission.md)")
    add_scoring_arguments(parser)
    parser.add_argument("--allow-partial", action="store_true", help="diagnose the pairs present only")
    parser.add_argument("--threshold", type=float, default=GAIN_THRESHOLD,
                        help="PCK points (mean over the alphas) a fix must gain to fail the check (default %(default)g)")
    parser.add_argument("--json", action="store_true",
                        help='print {"ok", "pck", "suspects": [{"fix", "pck@...", "gain", ...}], "warnings"}')


def run(args: argparse.Namespace) -> int:
    if not args.threshold >= 0:
        raise Psc6kError(f"--threshold must be >= 0 PCK points, got {args.threshold}")
    ann, limits = scoring_inputs(args)
    sub = load_submission(args.submission, limits=limits)
    diag = diagnose(ann, sub, args.alpha, allow_partial=args.allow_partial, protocol=args.protocol,
                    threshold=args.threshold)
    if args.json:
        json.dump(json_safe(diag.to_dict()), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_diagnosis(diag))
    return 0 if diag.ok else 1
