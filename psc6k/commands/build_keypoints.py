"""Sample 8 keypoints per sketch: object mask, spectral pseudo-parts, centroids (SPEC §4 A.1).

INPUT is a directory of sketch images (searched recursively) or a pair CSV with a ``sketch``
column (``test_pairs.csv`` from ``psc6k build-pairs``, a ``*_pairs_ps.csv``) or
``source_image,target_image`` columns (``*_pairs_st.csv``; the sketch side is used).  The output
is a ``sketch,X,Y`` CSV, one row per sketch that succeeded, in input order (sorted paths for a
directory, first appearance for a CSV).

Sketch keys in the output: for a CSV, its paths as written (relative to the Sketchy root); for a
directory, the path relative to the Sketchy root when the directory lies inside one (or
``--images`` names it), otherwise the path relative to INPUT.

A sketch that cannot be processed (unreadable or truncated file, empty or all-black image,
large pieces that stay apart after the dilation bound) gets one error line on stderr and the
batch goes on; the exit status is 1 if any sketch failed, unless ``--keep-going``.

Long runs are crash-safe: every result is appended to ``OUT.journal`` (fsync'd every
``JOURNAL_SYNC_EVERY`` results) and the final CSVs are written whole, through a temporary file
and a rename, only at the end.  ``--resume`` continues a killed run from its journal; the
result equals an uninterrupted run's, each sketch processed once.  ``--report FILE.csv``
records per sketch what the builder did (dilations, marks set aside, moved keypoints, status).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from psc6k.cli_errors import name_options, option_names
from psc6k.errors import Psc6kError
from psc6k.keypoints.batch import build_keypoints, write_outputs
from psc6k.keypoints.collect import collect
from psc6k.keypoints.inflight import WorkerDied
from psc6k.keypoints.journal import Journal, journal_path

HELP = "sample 8 keypoints per sketch (mask + spectral pseudo-parts)"
SECTION, ORDER = "build the benchmark", 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="directory of sketch images (recursive) or a pair CSV with a sketch column")
    parser.add_argument("--out", "-o", required=True, metavar="CSV", help="keypoints CSV to write (sketch,X,Y)")
    parser.add_argument("--images", metavar="ROOT", default=None,
                        help="root the CSV's paths are relative to (the Sketchy root); not given: the "
                             "CSV's folder, or the Sketchy root recorded in summary.json by build-pairs. "
                             "For a directory INPUT, output keys are made relative to ROOT")
    parser.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                        help="worker processes (0 = one per CPU)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the clustering (same for every sketch)")
    parser.add_argument("--viz", metavar="DIR", default=None,
                        help="also write one PNG per sketch: sketch | mask | pseudo-parts | keypoints")
    parser.add_argument("--max-dilations", type=int, default=None, metavar="N",
                        help="bound on 3x3 dilations used to connect the drawing's pieces; not given: "
                             "1/6 of the drawing's bounding-box side (34 for a 200 px drawing)")
    parser.add_argument("--stray-gap", type=int, default=None, metavar="PX",
                        help="ink groups this far (px) from the rest, holding under 5%% of the ink and "
                             "outside the object, are stray marks and set aside; not given: 1/12 of the "
                             "image side (21 for 256x256); 0 keeps every mark (the paper read literally)")
    parser.add_argument("--report", metavar="CSV", default=None,
                        help="also write one diagnostics row per sketch: mask pixels, dilations, marks "
                             "set aside, parts connected, keypoints moved, status")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUT.journal (same INPUT and options)")
    parser.add_argument("--close-gaps", type=int, default=0, metavar="PX",
                        help="beyond the paper: also close outline gaps up to ~2*PX pixels so that an "
                             "almost-closed outline is filled (0 = the paper's rule only)")
    parser.add_argument("--keep-going", action="store_true",
                        help="exit 0 even if some sketches failed (they are still reported)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise Psc6kError(f"--workers must be >= 0, got {args.workers}")
    if args.close_gaps < 0:
        raise Psc6kError(f"--close-gaps must be >= 0, got {args.close_gaps}")
    if args.max_dilations is not None and args.max_dilations < 0:
        raise Psc6kError(f"--max-dilations must be >= 0, got {args.max_dilations}")
    if args.stray_gap is not None and args.stray_gap < 0:
        raise Psc6kError(f"--stray-gap must be >= 0, got {args.stray_gap}")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise Psc6kError(f"--out {out}: is a directory; expected a CSV file path")
    report = Path(args.report) if args.report else None
    if report is not None and report.exists() and report.is_dir():
        raise Psc6kError(f"--report {report}: is a directory; expected a CSV file path")
    if report is not None and report.resolve() == out.resolve():
        raise Psc6kError(f"--report {report}: is the --out file; give the report its own path")
    items = collect(args.input, args.images)
    settings = {"input": str(Path(args.input).resolve()), "images": args.images, "seed": args.seed,
                "max_dilations": args.max_dilations, "stray_gap": args.stray_gap,
                "close_gaps": args.close_gaps, "n_sketches": len(items)}
    journal = Journal(journal_path(out), settings, args.resume)
    todo = [(k, p) for k, p in items if k not in journal.done]
    if journal.done:
        _print_err(f"psc6k build-keypoints: resuming: {len(items) - len(todo)} of {len(items)} sketches "
                   f"already done ({journal.path})")
    start = time.perf_counter()
    options = _option_names()  # a sketch's error names the builder's parameters; say our options

    def on_result(r):
        journal.append(r)
        if r["status"] != "ok":  # one line per failed sketch, as it happens
            _print_err(f"psc6k build-keypoints: {r['sketch']}: {name_options(r['error'], options)}")
        if "viz_error" in r:
            _print_err(f"psc6k build-keypoints: {r['sketch']}: could not write the --viz image: {r['viz_error']}")

    try:
        for _ in build_keypoints(todo, seed=args.seed, workers=args.workers, viz_dir=args.viz,
                                 max_dilations=args.max_dilations, stray_gap=args.stray_gap,
                                 close_gaps=args.close_gaps, progress=not args.no_progress,
                                 on_result=on_result):
            pass
    except WorkerDied as exc:
        done = len(items) - len(todo) + exc.n_done
        raise Psc6kError(f"{exc}; the {done} of {len(items)} sketches finished are kept in {journal.path}: "
                         "run the same command with --resume to continue") from None
    finally:
        journal.close()
    seconds = time.perf_counter() - start

    # the journal holds every sketch once, in input order: stream it into the final files
    summary = write_outputs(journal, out, report)
    summary.update({"input": str(args.input), "out": str(out), "report": args.report,
                    "seed": args.seed, "close_gaps": args.close_gaps, "stray_gap": args.stray_gap,
                    "workers": args.workers, "seconds": round(seconds, 3), "viz": args.viz,
                    "resumed": len(items) - len(todo)})
    journal.path.unlink()
    ok, n, failures = summary["n_ok"], summary["n_sketches"], summary["failures"]
    reasons = ", ".join(f"{c} {k}" for k, c in summary["failures_by_reason"].items())
    line = (f"build-keypoints: {ok} of {n} sketches -> {out} in {seconds:.1f} s; "
            f"{summary['dilated']} dilated (max {summary['max_dilations_used']}), "
            f"{summary['with_marks_set_aside']} with marks set aside "
            f"({summary['dust_components']} dust, {summary['stray_marks']} stray, "
            f"{summary['ink_px_set_aside']} ink px), {summary['keypoints_moved_onto_part']} keypoints "
            f"moved onto their part" + (f"; {len(failures)} failed ({reasons})" if failures else ""))
    if args.json:
        _print_err(line)
        print(json.dumps(summary, indent=2))
    else:
        print(line)
    if failures and not args.keep_going:
        return 1
    return 0


def _option_names() -> dict[str, str]:
    """This command's options by parameter name (:func:`psc6k.cli_errors.option_names`)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return option_names(parser)


def _print_err(text: str) -> None:
    tqdm.write(text, file=sys.stderr)
