"""Check that no photo or sketch of a test list is in a training list (train/test leakage).

TRAIN and TEST may each be a PSC6K CSV (test or train pairs, any layout), a Sketchy id list
(e.g. info/testset.txt) or a folder of images. Exit status 1 names the overlapping images (the
first few and the count), 0 when the split is clean, 2 for an unreadable input. Example::

    psc6k check-split PSC6K/train_pairs_ps.csv PSC6K/test_pairs_ps.csv
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.splits import check_split

HELP = "refuse a training list that holds photos or sketches of the test list"
SECTION, ORDER = "methods", 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("train", metavar="TRAIN", help="training list: PSC6K CSV, Sketchy id list or image folder")
    parser.add_argument("test", metavar="TEST", help="test list: PSC6K CSV, Sketchy id list or image folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object (ok, counts, first ids)")


def run(args: argparse.Namespace) -> int:
    result = check_split(args.train, args.test)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(result.message())
    return 0 if result.ok else 1
