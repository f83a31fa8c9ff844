"""The one ``psc6k`` command.

Sub-commands are *discovered*, not listed here: every installed distribution may register them in
the entry-point group ``psc6k.commands`` (this project does so in ``setup.cfg``), as
``name = module`` or ``name = module:object``. The core package therefore names no upper layer
(annotation app, scoring server, model zoo): they plug in the same way a third-party package would.

A command's target is imported only when that command runs (``psc6k eval`` must not pay for torch
or FastAPI). ``psc6k --help`` imports none when it can: it reads ``HELP``, ``SECTION`` and ``ORDER``
from the target module's source when they are literals there (:func:`static_attributes`), and
imports the target only otherwise. A target defines::

    HELP: str                                      # one line for 'psc6k --help' (else: docstring)
    SECTION: str                                   # optional: heading in 'psc6k --help' (SECTIONS)
    ORDER: int                                     # optional: place inside its section (default 50)
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int       # exit status

and raises :class:`psc6k.errors.Psc6kError` for anything the user can fix; the dispatcher prints
its message to stderr (no traceback) and exits with status 2. A target whose optional dependency is
missing (torch, kornia, timm) gives one line with the install hint, also status 2.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import os
import sys
from importlib.metadata import EntryPoint, entry_points

from psc6k import __version__
from psc6k.cli_errors import describe, missing_dependency, shorten
from psc6k.errors import Psc6kError

#: Entry-point group holding the sub-commands.
ENTRY_POINT_GROUP = "psc6k.commands"
#: Headings of ``psc6k --help`` in the order of a researcher's work: score a method, build (and
#: annotate) the benchmark, make submissions, look at results. A command joins one by its
#: ``SECTION``; other sections a plug-in names follow these (alphabetically), and commands without
#: a ``SECTION`` come last, under :data:`OTHER_SECTION`.
SECTIONS = ("score", "build the benchmark", "methods", "results")
OTHER_SECTION = "other commands"
DEFAULT_ORDER = 50


def discover_commands() -> dict[str, EntryPoint]:
    """Registered sub-commands, name -> entry point, sorted by name.

    Sorted because installers do not keep the order of registration; when two distributions
    register the same name, the first one found wins.
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def command_help(target) -> str:
    """One-line help of a command target: its ``HELP``, else the first line of its docstring."""
    text = getattr(target, "HELP", None) or (getattr(target, "__doc__", None) or "").strip()
    return text.splitlines()[0].strip() if text else ""


#: Module-level names ``psc6k --help`` reads from a command's source.
LISTED_ATTRIBUTES = ("HELP", "SECTION", "ORDER")


def static_attributes(ep: EntryPoint) -> dict | None:
    """``HELP``, ``SECTION``, ``ORDER`` (and the docstring as ``__doc__``) of a command module,
    read from its source without importing it; None when they cannot be read that way (a
    ``module:object`` target, no Python source, a non-literal value, no ``HELP`` nor docstring):
    the caller then imports the target.

    Only the parent packages are imported (to find the module), so ``psc6k --help`` does not
    pay for what each command imports to run.
    """
    if ":" in ep.value:
        return None
    try:
        spec = importlib.util.find_spec(ep.value)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), spec.origin)
    except Exception:  # the import that follows reports what is wrong
        return None
    found = {"__doc__": ast.get_docstring(tree)}
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = node.value.elts if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                else [node.value]
            if len(names) != len(values):
                continue
            for name, value in zip(names, values):
                if isinstance(name, ast.Name) and name.id in LISTED_ATTRIBUTES:
                    if not isinstance(value, ast.Constant):
                        return None
                    found[name.id] = value.value
    return found if found.get("HELP") or found["__doc__"] else None


class _Listed:
    """What ``psc6k --help`` shows of a command: its attributes read statically, or the target."""

    def __init__(self, attributes: dict):
        self.__dict__.update(attributes)


def _missing_dependency_message(name: str, exc: ModuleNotFoundError) -> str:
    return f"psc6k {name}: {missing_dependency(exc)}"


def _section_key(section: str) -> tuple:
    if section in SECTIONS:
        return (0, SECTIONS.index(section), "")
    return (2, 0, "") if section == OTHER_SECTION else (1, 0, section)


def _listing(commands: dict[str, EntryPoint]) -> list[str]:
    """The lines of ``psc6k --help``'s command list: grouped by section, then ``ORDER``, then name."""
    entries = []  # (section, order, name, help)
    for name, ep in commands.items():
        section, order = OTHER_SECTION, DEFAULT_ORDER
        try:
            attributes = static_attributes(ep)
            target = _Listed(attributes) if attributes is not None else ep.load()
            help_ = command_help(target)
            section = str(getattr(target, "SECTION", None) or OTHER_SECTION)
            order = getattr(target, "ORDER", DEFAULT_ORDER)
            order = order if isinstance(order, (int, float)) and not isinstance(order, bool) else DEFAULT_ORDER
        except ModuleNotFoundError as exc:
            help_ = f"(unavailable: needs {exc.name or 'a missing package'})"
        except Exception as exc:  # a broken plug-in must not break the listing of the others
            help_ = f"(unavailable: {type(exc).__name__})"
        entries.append((section, order, name, help_))
    lines: list[str] = []
    current = None
    for section, _, name, help_ in sorted(entries, key=lambda e: (_section_key(e[0]), e[1], e[2])):
        if section != current:
            lines += [""] if lines else []
            lines.append(f"{section}:")
            current = section
        lines.append(f"  {name:<16} {help_}")
    return lines


def _top_level_parser(commands: dict[str, EntryPoint], *, with_listing: bool = False) -> argparse.ArgumentParser:
    listing = "\n".join(_listing(commands)) + "\n\n" if with_listing else ""
    parser = argparse.ArgumentParser(
        prog="psc6k",
        usage="psc6k [-h] [--version] COMMAND ...",
        description="PSC6K photo-sketch correspondence benchmark toolkit.",
        epilog=listing + "Run 'psc6k COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"psc6k {__version__}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's ``--help``: each option's default shown once, and only a real one.

    ``(default: X)`` is appended unless the option's help already speaks of its default, the
    default is ``None`` (the help says what happens when the option is not given) or the option
    is an on/off switch (``--json``, ``--no-progress``: off unless given).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default is None or default is argparse.SUPPRESS or action.nargs == 0:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)" if text else "default: %(default)s"
        return text


class CommandParser(argparse.ArgumentParser):
    """The argument parser of a command and of its sub-commands (``annotate init``): whatever
    stock formatter a command asks for, its help follows :class:`HelpFormatter`."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        if formatter_class in (argparse.HelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
            formatter_class = HelpFormatter
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def build_command_parser(name: str, target) -> argparse.ArgumentParser:
    """The configured argument parser of command ``name`` implemented by ``target``."""
    description = (getattr(target, "__doc__", None) or command_help(target)).strip().split("\n\n")[0]
    parser = CommandParser(prog=f"psc6k {name}", description=description)
    target.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = discover_commands()
    if not argv or argv[0] in ("-h", "--help"):
        _top_level_parser(commands, with_listing=True).print_help()
        return 0
    if argv[0] == "--version":
        _top_level_parser(commands).parse_args(argv)
    name, rest = argv[0], argv[1:]
    if name not in commands:
        _top_level_parser(commands).print_usage(sys.stderr)
        close = difflib.get_close_matches(name, list(commands), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"psc6k: unknown command {name!r}{hint}; run 'psc6k --help' for the list.", file=sys.stderr)
        return 2
    try:
        target = commands[name].load()
        parser = build_command_parser(name, target)
    except ModuleNotFoundError as exc:
        print(_missing_dependency_message(name, exc), file=sys.stderr)
        return 2
    args = parser.parse_args(rest)
    # the command line as the user gave it (also when main() is called with a list), for the
    # provenance a command records with its results
    args.command_line = ["psc6k", *argv]
    try:
        status = target.run(args)
    except ModuleNotFoundError as exc:  # also when the import happens inside run (torch in predict / train)
        print(_missing_dependency_message(name, exc), file=sys.stderr)
        return 2
    except Psc6kError as exc:
        print(f"psc6k {name}: error: {shorten(describe(exc, parser))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"psc6k {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` & co.: stop quietly, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # never a traceback: a user mistake is one line and status 2
        if os.environ.get("PSC6K_DEBUG"):
            raise
        message = describe(exc, parser)
        if message is None:
            print(f"psc6k {name}: internal error: {type(exc).__name__}: {shorten(str(exc), 200)} (a bug; "
                  "rerun with PSC6K_DEBUG=1 for the traceback and report it)", file=sys.stderr)
            return 1
        print(f"psc6k {name}: error: {shorten(message)}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
