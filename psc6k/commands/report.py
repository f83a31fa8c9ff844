"""Write a static HTML report (opens offline) for one or more submissions: leaderboard with 95%
CIs, PCK against alpha, per-category chart, example pairs with correspondence lines, and the
human-model consistency heatmap when --clicks is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from psc6k.commands import add_dataset_arguments, resolve_dataset
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_clicks
from psc6k.protocols import PROTOCOLS
from psc6k.report import write_report
from psc6k.submission import load_submission

HELP = "write a static HTML report for one or more submissions"
SECTION, ORDER = "results", 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="*", metavar="SUBMISSION", help="submission files (.npz / .json / .json.gz)")
    add_dataset_arguments(parser)
    parser.add_argument("--clicks", "-c", default=None, help="raw clicks CSV: adds the consistency heatmap and human agreement")
    parser.add_argument("--out", "-o", default="report", help="output folder (index.html and figures)")
    parser.add_argument("--title", default="PSC6K report", help="page title")
    parser.add_argument("--examples", type=int, default=6, help="example pairs drawn")
    parser.add_argument("--failures", type=int, default=3, help="worst pairs per method in the failure gallery (0: none)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--allow-partial", action="store_true", help="score submissions that cover only some pairs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--protocol", default="psc6k", choices=sorted(PROTOCOLS),
                        help="evaluation protocol ('psc6k protocols' lists them; default: the paper's)")


def run(args: argparse.Namespace) -> int:
    if not args.submissions:
        raise Psc6kError("give at least one submission file to report on")
    if args.examples < 0 or args.bootstrap < 0 or args.failures < 0:
        raise Psc6kError("--examples, --failures and --bootstrap must be >= 0")
    ann_path, images = resolve_dataset(args.annotations, args.images)
    ann = read_annotations(ann_path)
    subs = []
    for path in args.submissions:
        sub = load_submission(path)
        if not sub.method or sub.method == "unnamed":
            sub.method = Path(path).name.split(".")[0]
        subs.append(sub)
    clicks = read_clicks(args.clicks) if args.clicks else None
    index = write_report(ann, subs, images, args.out, clicks=clicks, title=args.title, n_examples=args.examples, n_failures=args.failures,
                         allow_partial=args.allow_partial, n_bootstrap=args.bootstrap, progress=not args.no_progress,
                         protocol=args.protocol, command=getattr(args, "command_line", None))
    print(f"wrote {index}")
    return 0
