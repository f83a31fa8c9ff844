"""Command modules of the ``psc6k`` CLI (see :mod:`psc6k.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--annotations`` and ``--images``, with the same defaults in every command that takes them."""
    parser.add_argument("--annotations", "-a", default=None,
                        help="test_pairs_ps.csv or test_pairs_st.csv (default: the bundled sample's)")
    parser.add_argument("--images", "-i", default=None,
                        help="Sketchy root the CSV paths are relative to (default: the CSV's folder "
                             "when it holds rendered_256x256/, else the bundled sample)")


def resolve_dataset(annotations, images, *, command: str | None = None) -> tuple[Path, Path]:
    """(annotations CSV, Sketchy images root) from ``--annotations`` / ``--images``.

    Without ``--annotations`` the bundled sample is used (:func:`psc6k.data.sample_default`),
    and its images unless ``--images`` is given; without ``--images`` the CSV's folder is the root
    when it holds the image folder.
    """
    from psc6k.data import sample_default
    from psc6k.errors import Psc6kError
    from psc6k.sketchy import PHOTO_DIR

    if annotations is None:
        annotations = sample_default(None, command=command)
        if images is None:
            images = annotations.parent
    from psc6k.inputs import check_input_file

    annotations = check_input_file(annotations, what="an annotation CSV (test_pairs_ps.csv / test_pairs_st.csv)")
    if images is None:
        if (annotations.parent / PHOTO_DIR).is_dir():
            images = annotations.parent
        else:
            from psc6k.formats import read_annotations

            read_annotations(annotations)  # a bad CSV is the first thing to report
            raise Psc6kError(f"--images is required: {annotations.parent} holds no {PHOTO_DIR} folder")
    images = Path(images)
    if not (images / PHOTO_DIR).is_dir():
        raise Psc6kError(f"--images {images}: not a Sketchy root (no {PHOTO_DIR} folder inside)")
    return annotations, images
