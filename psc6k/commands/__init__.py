"""Command modules of the ``psc6k`` CLI (see :mod:`psc6k.cli`)."""

from __future__ import annotations

import argparse


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--annotations`` and ``--images``, with the same defaults in every command that takes them."""
    parser.add_argument("--annotations", "-a", default=None,
                        help="test_pairs_ps.csv or test_pairs_st.csv (default: the bundled sample's)")
    parser.add_argument("--images", "-i", default=None,
                        help="Sketchy root the CSV paths are relative to (default: the CSV's folder "
                             "when it holds rendered_256x256/, else the bundled sample)")
