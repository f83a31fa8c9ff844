"""Generate a synthetic Sketchy-shaped benchmark with exact dense ground truth.

Writes photos and sketches in the Sketchy layout (info/testset.txt, info/invalid-*.txt,
info/stats.csv, rendered_256x256/...), the four PSC6K CSVs of the test split, gt_flows.npz (the
exact flows of every test pair, as a flow submission that scores 100 / 100), clicks.csv
(simulated raw crowd clicks) and keypoints.csv. Same seed and arguments -> same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.synth import generate
from psc6k.synth.preview import contact_sheet

HELP = "generate a synthetic Sketchy-shaped benchmark with exact ground truth"
SECTION, ORDER = "build the benchmark", 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a new Sketchy root)")
    parser.add_argument("--categories", type=int, default=10, metavar="C", help="number of categories")
    parser.add_argument("--photos-per-category", type=int, default=10, metavar="P",
                        help="test photos per category (listed in info/testset.txt)")
    parser.add_argument("--sketches-per-photo", type=int, default=5, metavar="S",
                        help="valid sketches per photo; each test photo-sketch pair is annotated")
    parser.add_argument("--train-photos-per-category", type=int, default=2, metavar="T",
                        help="extra photos per category, not in the test set, for train_pairs_*.csv")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same bytes")
    parser.add_argument("--workers", type=int, default=1, metavar="W", help="parallel processes")
    parser.add_argument("--flow-size", type=int, default=32, metavar="N",
                        help="side of the ground-truth flow grids in gt_flows.npz (align_corners=True)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the photos")
    parser.add_argument("--no-clicks", action="store_true", help="do not write clicks.csv")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out, replacing only the files synth writes")
    parser.add_argument("--preview", metavar="PNG", help="also write a contact sheet of test pairs with keypoints")
    parser.add_argument("--preview-pairs", type=int, default=12, metavar="N", help="pairs on the contact sheet")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    summary = generate(args.out, categories=args.categories, photos_per_category=args.photos_per_category,
                       sketches_per_photo=args.sketches_per_photo,
                       train_photos_per_category=args.train_photos_per_category, seed=args.seed,
                       workers=args.workers, flow_size=args.flow_size, jpeg_quality=args.jpeg_quality,
                       force=args.force, progress=not args.no_progress and not args.json, clicks=not args.no_clicks)
    preview = None
    if args.preview:
        preview = str(contact_sheet(args.out, args.preview, n_pairs=args.preview_pairs, seed=args.seed))
    if args.json:
        d = summary.to_dict()
        d["preview"] = preview
        print(json.dumps(d, indent=2))
        return 0
    print(f"wrote {args.out}: {len(summary.categories)} categories, {summary.n_photos} photos, "
          f"{summary.n_sketches} sketches ({summary.n_invalid} deliberately invalid), "
          f"{summary.n_test_pairs} test pairs, {summary.n_train_pairs} train pairs, {summary.n_clicks} clicks")
    print(f"  annotations: {args.out}/test_pairs_ps.csv   ground-truth flows: {args.out}/gt_flows.npz")
    print(f"  check: psc6k eval {args.out}/gt_flows.npz --annotations {args.out}/test_pairs_ps.csv  (100.0 / 100.0)")
    if preview:
        print(f"  preview: {preview}")
    sys.stdout.flush()
    return 0
