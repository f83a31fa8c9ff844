"""Command modules of the ``psc6k`` CLI (see :mod:`psc6k.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from psc6k.data import SAMPLE_WORD, path_or_sample
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations
from psc6k.inputs import check_input_file
from psc6k.sketchy import PHOTO_DIR, SUMMARY_FILE, recorded_sketchy_root
from psc6k.submission import ReadLimits

#: Help of ``--annotations`` wherever it is required (scoring and the commands that make or show scores).
ANNOTATIONS_HELP = (f"test_pairs_ps.csv or test_pairs_st.csv to score against; '{SAMPLE_WORD}': the bundled "
                    "sample's (psc6k demo)")


def add_annotations_argument(parser: argparse.ArgumentParser, help: str = ANNOTATIONS_HELP) -> None:
    """``--annotations`` / ``-a``, required: nothing scores against the bundled sample unless asked."""
    parser.add_argument("--annotations", "-a", required=True, metavar="CSV", help=help)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--annotations`` and ``--images``, with the same defaults in every command that takes them."""
    add_annotations_argument(parser)
    parser.add_argument("--images", "-i", default=None, metavar="ROOT",
                        help="Sketchy root the CSV paths are relative to; not given: the CSV's folder when it "
                             f"holds rendered_256x256/, else the root recorded in {SUMMARY_FILE} beside the CSV "
                             f"(psc6k build-pairs, psc6k demo); '{SAMPLE_WORD}': the bundled sample's images")


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every scoring command shares (``eval``, ``compare``), with one set of defaults."""
    add_annotations_argument(parser)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.10],
                        help="PCK thresholds as fractions of the 256 px image side")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--max-decompressed-mb", type=float, default=None,
                        help="largest decompressed JSON text / declared NPZ arrays, in MiB (default 8192; "
                             "1024 in 'psc6k serve')")
    parser.add_argument("--max-flow-side", type=int, default=256, help="largest flow height / width accepted")


def scoring_inputs(args: argparse.Namespace):
    """Check the shared scoring options and read the annotations.

    Returns
    -------
    ann : psc6k.formats.Annotations
    limits : psc6k.submission.ReadLimits
        What one submission may cost to read: at most one entry per annotated pair (+1, so that an
        extra pair is named by the alignment), as the server reads it.
    """
    if any(not 0 < a < 1 for a in args.alpha):
        raise Psc6kError(f"--alpha values must lie in (0, 1), got {args.alpha}")
    if args.bootstrap < 0:
        raise Psc6kError("--bootstrap must be >= 0")
    if args.max_decompressed_mb is not None and args.max_decompressed_mb <= 0:
        raise Psc6kError("--max-decompressed-mb must be > 0")
    if args.max_flow_side < 2:
        raise Psc6kError("--max-flow-side must be >= 2")
    ann = read_annotations(path_or_sample(args.annotations))
    limits = ReadLimits(max_side=args.max_flow_side, max_pairs=len(ann) + 1)
    if args.max_decompressed_mb is not None:
        limits = ReadLimits(int(args.max_decompressed_mb * 1024 * 1024), args.max_flow_side, len(ann) + 1)
    return ann, limits


def resolve_dataset(annotations, images) -> tuple[Path, Path]:
    """(annotations CSV, Sketchy images root) from ``--annotations`` / ``--images``.

    Either may be the word ``sample`` (the bundled sample). Without ``--images`` the root is the
    CSV's folder when it holds the photo folder, else the root recorded in ``summary.json``
    beside the CSV (``psc6k build-pairs``, ``psc6k demo``).
    """
    annotations = check_input_file(path_or_sample(annotations),
                                   what="an annotation CSV (test_pairs_ps.csv / test_pairs_st.csv)")
    if images is None:
        recorded = recorded_sketchy_root(annotations.parent)
        if (annotations.parent / PHOTO_DIR).is_dir():
            images = annotations.parent
        elif recorded is not None:
            images = recorded
        else:
            read_annotations(annotations)  # a bad CSV is the first thing to report
            raise Psc6kError(f"--images is required: {annotations.parent} holds no {PHOTO_DIR} folder and no "
                             f"{SUMMARY_FILE} naming the Sketchy root; pass --images ROOT, the folder the CSV's "
                             f"paths are relative to ('--images {SAMPLE_WORD}' for the bundled sample's images)")
    images = path_or_sample(images, None)
    if not (images / PHOTO_DIR).is_dir():
        raise Psc6kError(f"--images {images}: not a Sketchy root (no {PHOTO_DIR} folder inside)")
    return annotations, images
