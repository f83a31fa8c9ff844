"""Human-model consistency (paper Fig. 5): the mean distance between the photo points two
systems give the same sketch keypoint, divided by the image size (256), for every pair of
systems: the annotator slots (first, second, third click of each keypoint) and each method's
sketch->photo transfers. Writes consistency.csv, consistency.json and a heatmap consistency.png,
and prints the matrix with human agreement PCK (each click against the centroid of the others).
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.consistency import compute_consistency, write_consistency
from psc6k.data import path_or_sample
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_clicks
from psc6k.submission import load_submission

HELP = "human-model consistency (paper Fig. 5) from clicks and submissions"
SECTION, ORDER = "results", 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="*", metavar="SUBMISSION",
                        help="method submissions (.npz / .json / .json.gz); none: annotators only")
    parser.add_argument("--clicks", "-c", required=True, help="raw clicks CSV (participant,photo,sketch,keypoint,x,y,...)")
    parser.add_argument("--annotations", "-a", default=None, metavar="CSV",
                        help="test_pairs_ps.csv (or _st) giving the sketch keypoints the methods transfer; "
                             "required with submissions; 'sample': the bundled sample's")
    parser.add_argument("--slots", type=int, default=None,
                        help="annotator slots (default: the most clicks any keypoint has, 3 in PSC6K)")
    parser.add_argument("--out", "-o", default="consistency", help="output folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    if args.slots is not None and args.slots < 1:
        raise Psc6kError("--slots must be >= 1")
    if args.submissions and args.annotations is None:
        raise Psc6kError("--annotations is required with submissions (the sketch keypoints they transfer)")
    clicks = read_clicks(args.clicks)
    ann = read_annotations(path_or_sample(args.annotations)) if args.annotations else None
    subs = []
    for path in args.submissions:
        sub = load_submission(path)
        subs.append((sub.method if sub.method and sub.method != "unnamed" else path, sub))
    names = [n for n, _ in subs]
    for i, n in enumerate(names):  # two files with the same method name stay apart
        if names.count(n) > 1:
            subs[i] = (f"{n} ({args.submissions[i]})", subs[i][1])
    result = compute_consistency(clicks, subs, ann, n_slots=args.slots)
    paths = write_consistency(result, args.out)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    labels = [f"[{i + 1}] {n}" for i, n in enumerate(result.names)]
    width = max(len(lab) for lab in labels)
    print(f"mean keypoint distance / 256 over {result.n_pairs} pairs (0 = identical):")
    print(" " * width + " " + "".join(f"{f'[{i + 1}]':>8}" for i in range(len(labels))))
    for label, row in zip(labels, result.distance):
        print(f"{label:<{width}} " + "".join("{:>8}".format("-" if v != v else f"{v:.4f}") for v in row))
    h = result.human_agreement
    if h:
        print(f"human agreement (each click vs the centroid of the others, inliers): "
              f"PCK@0.05 {h.get('pck@0.05', float('nan')):.2f}  PCK@0.10 {h.get('pck@0.10', float('nan')):.2f}  "
              f"({h.get('n_clicks', 0)} clicks)")
    print(f"wrote {paths['csv']}, {paths['json']}, {paths['png']}")
    return 0
