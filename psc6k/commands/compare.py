"""Paired comparison of two submissions on the same pairs: delta PCK per alpha with a 95%
paired-bootstrap CI and an exact sign-flip p-value, overall, per direction and per category
(per-category p-values adjusted by Holm, or Benjamini-Hochberg with --correction bh).

Example::

    psc6k compare mine.npz baseline.npz --annotations PSC6K/test_pairs_ps.csv --json
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.commands import add_scoring_arguments, scoring_inputs
from psc6k.compare import compare, format_comparison
from psc6k.jsonsafe import json_safe
from psc6k.submission import load_submission

HELP = "paired comparison of two submissions: delta PCK, bootstrap CI, exact sign-flip p-value"
SECTION, ORDER = "score", 15


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="submission A (.npz / .json / .json.gz); delta = A - B")
    parser.add_argument("b", metavar="B", help="submission B")
    add_scoring_arguments(parser)
    parser.add_argument("--correction", choices=("holm", "bh"), default="holm",
                        help="per-category p-value adjustment: holm (family-wise error) or bh (false discovery rate)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="submissions may cover only some pairs; compare on the pairs both cover")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--no-categories", action="store_true", help="table without the per-category rows")


def run(args: argparse.Namespace) -> int:
    ann, limits = scoring_inputs(args)
    sub_a, sub_b = load_submission(args.a, limits=limits), load_submission(args.b, limits=limits)
    for sub, path in ((sub_a, args.a), (sub_b, args.b)):
        if not sub.method or sub.method == "unnamed":
            from pathlib import Path

            sub.method = Path(path).name.split(".")[0]
    cmp = compare(ann, sub_a, sub_b, args.alpha, allow_partial=args.allow_partial, n_bootstrap=args.bootstrap,
                  seed=args.seed, correction=args.correction, sources=(args.a, args.b),
                  protocol=args.protocol)
    if args.json:
        json.dump(json_safe(cmp.to_dict()), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_comparison(cmp, categories=not args.no_categories))
    return 0
