"""Score a submission (flows or keypoints) against PSC6K annotations by PCK, as the paper does.

Prints a table (overall, per direction, per category, mean error in px, bootstrap 95% CI), or
with --json one JSON object whose "overall" maps "pck@0.05" / "pck@0.10" to percentages.
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.commands import add_scoring_arguments, scoring_inputs
from psc6k.dense import evaluate_dense, format_dense
from psc6k.jsonsafe import json_safe
from psc6k.pck import evaluate, format_table
from psc6k.submission import load_submission

HELP = "score a submission (flows or keypoints) by PCK, as the paper does"
SECTION, ORDER = "score", 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", help="submission file: .json, .json.gz or .npz (docs/submission.md)")
    add_scoring_arguments(parser)
    parser.add_argument("--allow-partial", action="store_true",
                        help="score the pairs present instead of failing on missing ones; reports coverage")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--per-pair", action="store_true", help="with --json: add per-pair keypoint errors")
    parser.add_argument("--no-categories", action="store_true", help="table without the per-category rows")
    parser.add_argument("--dense-gt", default=None, metavar="GT_FLOWS",
                        help="exact ground-truth flows (e.g. gt_flows.npz of psc6k synth): adds AEPE, dense PCK, "
                             "and sparsification / AUSE when the submission carries confidence maps")


def run(args: argparse.Namespace) -> int:
    ann, limits = scoring_inputs(args)
    sub = load_submission(args.submission, limits=limits)
    res = evaluate(ann, sub, args.alpha, allow_partial=args.allow_partial, n_bootstrap=args.bootstrap,
                   seed=args.seed, protocol=args.protocol)
    dense = None
    if args.dense_gt is not None:
        gt = load_submission(args.dense_gt, source=f"--dense-gt {args.dense_gt}")
        # confidence maps are read and checked by the one reader (Submission.confidence)
        dense = evaluate_dense(sub, gt, confidence=sub.confidence, pairs=set(ann.pairs))
    if args.json:
        out = res.to_dict(per_pair=args.per_pair, ann=ann)
        if dense is not None:
            out["dense"] = json_safe(dense.to_dict())
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(res, categories=not args.no_categories))
        if dense is not None:
            print()
            print(format_dense(dense))
    return 0
