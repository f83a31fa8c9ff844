"""The one ``psc6k`` command.

Sub-commands are registered here by name with the module that implements them, and a module is
imported only when its command runs: ``psc6k eval`` must not pay for torch or FastAPI, and the
core package never imports the web or model parts (they are looked up by name at dispatch).

Each command module defines::

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int      # exit status

and raises :class:`psc6k.errors.Psc6kError` for anything the user can fix; the dispatcher
prints its message to stderr (no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from psc6k import __version__

#: name -> (module, one-line help). Order is the order shown by ``psc6k --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("evaluation.eval_cli", "score a submission (flows or keypoints) by PCK, as the paper does"),
    "synth": ("psc6k.commands.synth", "generate a synthetic Sketchy-shaped benchmark with exact ground truth"),
    "build-pairs": ("psc6k.commands.build_pairs", "sample PSC6K test/train pairs from a Sketchy download"),
    "build-keypoints": ("psc6k.commands.build_keypoints", "sample 8 keypoints per sketch (mask + spectral pseudo-parts)"),
    "aggregate": ("psc6k.commands.aggregate", "aggregate crowd clicks with the 3-sigma rule into PSC6K CSVs"),
    "annotate": ("annotation_app.cli", "crowd annotation study: init, serve"),
    "serve": ("evaluation.server.cli", "run the scoring / leaderboard server"),
    "predict": ("model_zoo.cli_predict", "predict a flow submission with PSCNet (needs psc6k[model])"),
    "train": ("model_zoo.cli_train", "train PSCNet: encoder (MoCo v2) or estimator (needs psc6k[model])"),
    "baseline": ("psc6k.commands.baseline", "run a classical baseline (identity, affine, dense) into a submission"),
    "consistency": ("psc6k.commands.consistency", "human-model consistency (paper Fig. 5) from clicks and submissions"),
    "report": ("psc6k.commands.report", "write a static HTML report for one or more submissions"),
    "demo": ("psc6k.commands.demo", "run the whole benchmark on the bundled sample and print the leaderboard"),
}


def _top_level_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="psc6k",
        description="PSC6K photo-sketch correspondence benchmark toolkit.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun 'psc6k COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"psc6k {__version__}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


def build_command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """Import the module of command ``name`` and return its configured parser and the module."""
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"psc6k {name}",
        description=(module.__doc__ or help_).strip().split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    from psc6k.errors import Psc6kError

    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_level_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] == "--version":
        top.parse_args(argv)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.print_usage(sys.stderr)
        close = [c for c in COMMANDS if c.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"psc6k: unknown command {name!r}{hint}; run 'psc6k --help' for the list.", file=sys.stderr)
        return 2
    try:
        parser, module = build_command_parser(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        extra = " Install it with: pip install 'psc6k[model]'" if missing.split(".")[0] in ("torch", "kornia") else ""
        print(f"psc6k {name}: needs the Python package {missing!r}, which is not installed.{extra}", file=sys.stderr)
        return 2
    args = parser.parse_args(rest)
    try:
        status = module.run(args)
    except Psc6kError as exc:
        print(f"psc6k {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"psc6k {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` & co.: stop quietly, like other Unix tools.
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
