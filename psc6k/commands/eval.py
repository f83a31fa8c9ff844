"""Score a submission (flows or keypoints) against PSC6K annotations by PCK, as the paper does.

Prints a table (overall, per direction, per category, mean error in px, bootstrap 95% CI), or
with --json one JSON object whose "overall" maps "pck@0.05" / "pck@0.10" to percentages.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "score a submission (flows or keypoints) by PCK, as the paper does"
SECTION, ORDER = "score", 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", help="submission file: .json, .json.gz or .npz (docs/submission.md)")
    parser.add_argument("--annotations", "-a", default=None,
                        help="test_pairs_ps.csv or test_pairs_st.csv (default: the bundled sample's)")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.10],
                        help="PCK thresholds as fractions of the 256 px image side")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score the pairs present instead of failing on missing ones; reports coverage")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--per-pair", action="store_true", help="with --json: add per-pair keypoint errors")
    parser.add_argument("--no-categories", action="store_true", help="table without the per-category rows")
    parser.add_argument("--max-decompressed-mb", type=float, default=None,
                        help="largest decompressed JSON text / declared NPZ arrays, in MiB (default 8192; "
                             "'psc6k serve' has the same option, default 1024)")
    parser.add_argument("--max-flow-side", type=int, default=256, help="largest flow height / width accepted")
    parser.add_argument("--dense-gt", default=None, metavar="GT_FLOWS",
                        help="exact ground-truth flows (e.g. gt_flows.npz of psc6k synth): adds AEPE, dense PCK, "
                             "and sparsification / AUSE when the submission carries confidence maps")


def run(args: argparse.Namespace) -> int:
    from psc6k.data import sample_default
    from psc6k.errors import Psc6kError
    from psc6k.formats import read_annotations
    from psc6k.pck import evaluate, format_table
    from psc6k.submission import ReadLimits, load_submission

    if any(not 0 < a < 1 for a in args.alpha):
        raise Psc6kError(f"--alpha values must lie in (0, 1), got {args.alpha}")
    if args.bootstrap < 0:
        raise Psc6kError("--bootstrap must be >= 0")
    ann = read_annotations(sample_default(args.annotations, command="eval"))
    if args.max_decompressed_mb is not None and args.max_decompressed_mb <= 0:
        raise Psc6kError("--max-decompressed-mb must be > 0")
    if args.max_flow_side < 2:
        raise Psc6kError("--max-flow-side must be >= 2")
    # at most one entry per annotated pair (+1: an extra pair is named by the alignment), as the server
    limits = ReadLimits(max_side=args.max_flow_side, max_pairs=len(ann) + 1)
    if args.max_decompressed_mb is not None:
        limits = ReadLimits(int(args.max_decompressed_mb * 1024 * 1024), args.max_flow_side, len(ann) + 1)
    sub = load_submission(args.submission, limits=limits)
    res = evaluate(ann, sub, args.alpha, allow_partial=args.allow_partial, n_bootstrap=args.bootstrap,
                   seed=args.seed)
    dense = None
    if args.dense_gt is not None:
        from psc6k.dense import evaluate_dense

        gt = load_submission(args.dense_gt, source=f"--dense-gt {args.dense_gt}")
        # confidence maps are read and checked by the one reader (Submission.confidence)
        dense = evaluate_dense(sub, gt, confidence=sub.confidence, pairs=set(ann.pairs))
    if args.json:
        from psc6k.jsonsafe import json_safe

        out = res.to_dict(per_pair=args.per_pair, ann=ann)
        if dense is not None:
            out["dense"] = json_safe(dense.to_dict())
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(res, categories=not args.no_categories))
        if dense is not None:
            from psc6k.dense import format_dense

            print()
            print(format_dense(dense))
    return 0
