"""Sample PSC6K's photo-sketch pairs from a Sketchy download (paper §2.1, SPEC §2-3).

Reads ``info/testset.txt`` (the test photos) and the ``info/invalid-*.txt`` lists, samples
``--sketches-per-photo`` valid sketches per test photo (seeded), and writes to ``--out``:

  test_pairs.csv       photo,sketch,class: the pairs to annotate (input of ``psc6k annotate init``
                       and of ``psc6k build-keypoints``)
  train_pairs_ps.csv   photo,sketch,class,flip: every valid sketch of every other photo, flip 0 and 1
  train_pairs_st.csv   source_image,target_image,class,flip: the same, both directions
  summary.json         counts, settings, test photos with too few valid sketches

Test photos with fewer valid sketches than asked use all they have and are listed (stderr and
summary.json). By default the sketches of the paper's two invalid lists are dropped (error,
pose; SPEC §2): see docs/builder.md; --invalid-lists chooses (e.g. all four).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from psc6k.errors import Psc6kError
from psc6k.formats import write_pair_list, write_train_pairs_ps, write_train_pairs_st
from psc6k.pairs import PAPER_INVALID_LISTS, build_pairs
from psc6k.sketchy import INVALID_LISTS

HELP = "sample PSC6K test/train pairs from a Sketchy download"
SECTION, ORDER = "build the benchmark", 10


def _lists(text: str) -> tuple[str, ...]:
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in INVALID_LISTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown list(s) {', '.join(bad)}; choose from "
                                         f"{', '.join(INVALID_LISTS)} (comma-separated) or 'none'")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="SKETCHY_ROOT", help="the Sketchy folder (with info/ and rendered_256x256/)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="folder for the pair CSVs and summary.json")
    parser.add_argument("--sketches-per-photo", type=int, default=5, metavar="N", help="valid sketches sampled per test photo")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="sampling seed")
    parser.add_argument("--invalid-lists", type=_lists, default=",".join(PAPER_INVALID_LISTS), metavar="NAMES",
                        help="Sketchy invalid lists whose sketches are dropped: a comma-separated "
                             f"subset of {','.join(INVALID_LISTS)}, or 'none' (default: the paper's "
                             f"{','.join(PAPER_INVALID_LISTS)})")
    parser.add_argument("--testset", metavar="FILE", default=None,
                        help="test photo list; not given: SKETCHY_ROOT/info/testset.txt")
    parser.add_argument("--no-train", action="store_true", help="write only test_pairs.csv and summary.json")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout too")


def run(args: argparse.Namespace) -> int:
    import sys

    root = Path(args.root)
    if not root.is_dir():
        raise Psc6kError(f"{root}: not a directory (expected the Sketchy root)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise Psc6kError(f"--out {out}: exists and is not a directory")
    result = build_pairs(root, sketches_per_photo=args.sketches_per_photo, seed=args.seed,
                         invalid_lists=args.invalid_lists, testset=args.testset, with_train=not args.no_train)
    out.mkdir(parents=True, exist_ok=True)
    files = {"test_pairs": str(out / "test_pairs.csv")}
    write_pair_list(result.test, out / "test_pairs.csv")
    if not args.no_train:
        write_train_pairs_ps(result.train, out / "train_pairs_ps.csv")
        write_train_pairs_st(result.train, out / "train_pairs_st.csv")
        files["train_pairs_ps"] = str(out / "train_pairs_ps.csv")
        files["train_pairs_st"] = str(out / "train_pairs_st.csv")
    summary = dict(result.summary, files=files)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    s = summary
    for path in s["invalid_lists_missing"]:
        print(f"psc6k build-pairs: warning: {path} not found; no sketches dropped for it", file=sys.stderr)
    for pid in s["missing_photos"]:
        print(f"psc6k build-pairs: warning: test photo {pid} is listed in {s['testset']} but not on disk; "
              "skipped", file=sys.stderr)
    for m in s["testset_category_mismatch"]:
        print(f"psc6k build-pairs: warning: test photo {m['photo']} is listed under {m['listed']!r} but "
              f"lies in {m['on_disk']!r}; used the folder on disk", file=sys.stderr)
    for sp in s["short_photos"]:
        print(f"psc6k build-pairs: {sp['photo']}: only {sp['n_valid']} valid sketches "
              f"(of {sp['n_sketches']}); using all of them", file=sys.stderr)
    line = (f"build-pairs: {s['n_test_pairs']} test pairs from {s['n_test_photos']} photos in "
            f"{s['n_test_categories']} categories ({s['n_short_photos']} with fewer than "
            f"{s['sketches_per_photo']} valid sketches)"
            + ("" if args.no_train else f", {s['n_train_pairs']} training pairs from {s['n_train_photos']} photos")
            + f" -> {out}")
    if args.json:
        print(line, file=sys.stderr)
        print(json.dumps(summary, indent=2))
    else:
        print(line)
    return 0
