"""One CLI dialect across every registered command, and library errors that name parameters.

- every command's and sub-command's ``--help``: the progress switch is ``--no-progress``, each
  default shown once and never as ``None`` / ``False``;
- library modules raise messages naming *parameters* (`` `dense_gt` ``); the one place that turns
  an error into a command's line (``psc6k.cli_errors``) writes the command's option instead;
- no silent sample: scoring without ``--annotations`` exits 2 naming it, ``sample`` is the word;
- ``report`` finds a demo folder's images (or says how), ``build-keypoints`` refuses photos.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from psc6k.cli import build_command_parser, discover_commands, main
from psc6k.cli_errors import command_message, option_names
from psc6k.data import path_or_sample, sample_path
from psc6k.errors import ParameterError, Psc6kError, SubmissionError
from psc6k.images import read_image
from psc6k.keypoints.io import looks_like_photo
from psc6k.sketchy import PHOTO_DIR, SKETCH_DIR
from psc6k.submission import Submission, identity_flow, save_submission

REPO = Path(__file__).resolve().parents[2]
SAMPLE = sample_path()

# ------------------------------------------------------------------------------ --help dialect


def _command_lines() -> list[list[str]]:
    """``[command, sub, ...]`` of every registered command and each of its sub-commands."""
    out = []

    def walk(prefix, parser):
        out.append(prefix)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(prefix + [name], sub)

    for name, ep in discover_commands().items():
        try:
            target = ep.load()
        except ModuleNotFoundError:  # an optional stack missing: its command has nothing to show
            continue
        walk([name], build_command_parser(name, target))
    return out


COMMAND_LINES = _command_lines()


def _option_entries(help_text: str) -> list[str]:
    """The entries of a ``--help``: one string per argument, its continuation lines joined."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^  \S", line):
            entries.append(line.strip())
        elif line.startswith("   ") and entries:
            entries[-1] += " " + line.strip()
    return entries


def test_every_command_and_sub_command_is_checked():
    names = {" ".join(c) for c in COMMAND_LINES}
    assert {"eval", "compare", "demo", "synth", "report", "annotate init", "annotate serve",
            "serve token create", "serve token list", "serve token revoke"} <= names, names


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_help_speaks_the_one_dialect(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for bad in ("(default: None)", "(default: False)", "(default: True)", "None means"):
        assert bad not in text, f"psc6k {' '.join(argv)} --help: {bad!r}"
    for entry in _option_entries(text):
        # a default is said once: by the help text or by the formatter, never both
        assert len(re.findall(r"\bdefault\b", entry, re.IGNORECASE)) <= 1, entry
        options = re.findall(r"(?<![\w-])--?[a-z][\w-]*", entry.split("  ")[0])
        assert "--quiet" not in options and "-q" not in options, f"use --no-progress: {entry}"
        if re.search(r"\bprogress\b", entry.split("  ", 1)[-1]) and options and options[0].startswith("--no-"):
            assert options[0] == "--no-progress", entry


def test_formatter_shows_real_defaults_only(capsys):
    parser = build_command_parser("x", type("T", (), {"add_arguments": staticmethod(lambda p: (
        p.add_argument("--workers", type=int, default=0, help="processes"),
        p.add_argument("--out", default=None, help="folder (not given: none)"),
        p.add_argument("--json", action="store_true", help="JSON"),
        p.add_argument("--lr", type=float, default=0.5, help="rate (default 0.5 here)")))}))
    entries = {e.split()[0]: e for e in _option_entries(parser.format_help())}
    assert entries["--workers"].endswith("processes (default: 0)")   # 0 is a real default, not "off"
    assert "default" not in entries["--out"] and "default" not in entries["--json"]
    assert entries["--lr"].count("default") == 1


# ------------------------------------------------------------------------------ parameters -> options
#: Modules that are commands: they own their options and may name them.
COMMAND_MODULES = {"psc6k/cli.py", "psc6k/cli_errors.py", "annotation_app/cli.py", "evaluation/server/cli.py",
                   "model_zoo/cli_predict.py", "model_zoo/cli_train.py"}
COMMAND_PACKAGES = ("psc6k/commands/",)
#: Library modules whose owners have not converted their messages yet (helpers `trainer`,
#: `weblayer` / `studyrules`): listed so that the list can only shrink (an entry without a hit fails).
PENDING: set[str] = set()
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _library_modules():
    for package in ("psc6k", "psc6k_web", "evaluation", "annotation_app", "model_zoo"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel not in COMMAND_MODULES and not rel.startswith(COMMAND_PACKAGES):
                yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _error_calls(tree):
    """Every ``raise X(...)`` and every other ``SomethingError(...)`` call (a message built ahead)."""
    raised = [node.exc for node in ast.walk(tree) if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)]
    built = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and (getattr(node.func, "id", None) or getattr(node.func, "attr", None) or "").endswith("Error")]
    yield from {id(call): call for call in raised + built}.values()


def _strings(node):
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _flag_hits() -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for rel, tree in _library_modules():
        for call in _error_calls(tree):
            for text in _strings(call):
                hits.setdefault(rel, []).extend(f"line {call.lineno}: {f}" for f in FLAG.findall(text))
    return {rel: found for rel, found in hits.items() if found}


def test_library_messages_name_parameters_not_options():
    hits = _flag_hits()
    new = {rel: found for rel, found in hits.items() if rel not in PENDING}
    assert not new, f"library errors naming command options (name the parameter in backticks): {new}"
    assert not PENDING - set(hits), f"converted: drop from PENDING: {sorted(PENDING - set(hits))}"


def test_the_flag_scan_sees_a_flag():
    tree = ast.parse('raise ParameterError(f"`x` {v}; pass --allow-partial", param="x")')
    assert [FLAG.findall(t) for c in _error_calls(tree) for t in _strings(c)] == [[], ["--allow-partial"], []]


def test_parameter_errors_name_their_parameters_in_backticks():
    wrong = []
    for rel, tree in _library_modules():
        for call in _error_calls(tree):
            param = next((k.value for k in call.keywords if k.arg == "param"), None)
            if param is None:
                continue
            params = [n.value for n in ast.walk(param) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            text = "".join(_strings(call.args[0])) if call.args else ""
            named = set(re.findall(r"`(\w+)`", text))
            if params and not named:
                wrong.append(f"{rel}:{call.lineno}")
            wrong += [f"{rel}:{call.lineno}: {p}" for p in params if p not in named]
    assert not wrong, wrong


def test_command_message_writes_the_commands_option():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", dest="max_pairs", type=int)
    parser.add_argument("input", metavar="INPUT")
    sub = parser.add_subparsers().add_parser("init")
    sub.add_argument("--db", dest="db")
    assert option_names(parser) == {"max_pairs": "--pairs", "input": "INPUT", "db": "--db"}
    exc = ParameterError("`max_pairs` must be >= 1 (`db`, `other`)", param=("max_pairs", "db", "other"))
    assert command_message(exc, parser) == "--pairs must be >= 1 (--db, `other`)"
    assert command_message(exc, None) == str(exc)   # a Python caller reads the parameter
    assert command_message(SubmissionError("`x` bad"), parser) == "`x` bad"  # no param: untouched


def test_library_errors_reach_the_user_as_options(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--pairs", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "psc6k demo: error: --pairs must be >= 1, got 0" in err, err
    assert main(["synth", "--out", str(tmp_path / "s"), "--flow-size", "1"]) == 2
    assert "--flow-size must be at least 2" in capsys.readouterr().err
    ann = SAMPLE / "test_pairs_ps.csv"
    assert main(["eval", str(SAMPLE / "gt_flows.npz"), "-a", str(ann), "--dense-gt", str(_keypoint_sub(tmp_path)),
                 "--bootstrap", "0"]) == 2
    assert "--dense-gt: the dense ground truth must hold flows" in capsys.readouterr().err


def _keypoint_sub(tmp_path) -> Path:
    from psc6k.formats import read_annotations

    ann = read_annotations(SAMPLE / "test_pairs_ps.csv")
    kps = np.zeros((len(ann), 8, 2))
    return save_submission(Submission("kp", "keypoints", ann.photo, ann.sketch, kps, kps), tmp_path / "kp.json")


# ------------------------------------------------------------------------------ no silent sample
@pytest.fixture(scope="module")
def identity_npz(tmp_path_factory) -> Path:
    from psc6k.formats import read_annotations

    ann = read_annotations(SAMPLE / "test_pairs_ps.csv")
    flows = identity_flow(len(ann), 4)
    return save_submission(Submission("identity", "flow", ann.photo, ann.sketch, flows, flows),
                           tmp_path_factory.mktemp("sub") / "identity.npz")


@pytest.mark.parametrize("argv", [["eval", "{S}"], ["compare", "{S}", "{S}"], ["baseline", "identity", "-o", "{T}/b.npz"],
                                  ["report", "{S}", "-o", "{T}/r"], ["serve"]], ids=lambda a: a[0])
def test_scoring_without_annotations_exits_2_naming_the_option(argv, identity_npz, tmp_path, capsys):
    argv = [a.replace("{S}", str(identity_npz)).replace("{T}", str(tmp_path)) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:   # argparse's "required" error
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    assert "--annotations" in captured.err and not captured.out, captured


def test_the_word_sample_names_the_bundled_sample(identity_npz, tmp_path, capsys):
    assert path_or_sample("sample") == SAMPLE / "test_pairs_ps.csv"
    assert path_or_sample("sample", None) == SAMPLE
    assert path_or_sample("./sample") == Path("sample")       # a file called sample stays a file
    assert main(["eval", str(identity_npz), "-a", "sample", "--json", "--bootstrap", "0"]) == 0
    by_word = capsys.readouterr().out
    assert main(["eval", str(identity_npz), "-a", str(SAMPLE / "test_pairs_ps.csv"), "--json", "--bootstrap", "0"]) == 0
    assert capsys.readouterr().out == by_word
    assert main(["baseline", "identity", "-a", "sample", "-i", "sample", "-o", str(tmp_path / "b.npz"),
                 "--no-progress"]) == 0


# ------------------------------------------------------------------------------ report finds images
def test_report_finds_the_images_of_a_demo_folder_or_says_how(identity_npz, tmp_path, capsys):
    demo = tmp_path / "demo"
    assert main(["demo", "--out", str(demo), "--pairs", "4", "--examples", "0", "--use-sample-clicks",
                 "--no-progress"]) == 0
    capsys.readouterr()
    ann = demo / "annotations" / "test_pairs_ps.csv"
    subs = sorted(str(p) for p in (demo / "submissions").glob("*.npz"))
    assert main(["report", *subs, "-a", str(ann), "-o", str(tmp_path / "r"), "--examples", "1", "--bootstrap", "0",
                 "--no-progress"]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(ann, lone / ann.name)  # no images beside it, no summary.json
    assert main(["report", *subs, "-a", str(lone / ann.name), "-o", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--images is required" in err and "--images sample" in err, err


# ------------------------------------------------------------------------------ build-keypoints refuses photos
def test_photo_check_separates_the_samples_photos_and_sketches():
    photos = sorted((SAMPLE / PHOTO_DIR).rglob("*.jpg"))
    sketches = sorted((SAMPLE / SKETCH_DIR).rglob("*.png"))
    assert photos and sketches
    assert all(looks_like_photo(read_image(None, p, "rgb", size=None)) for p in photos)
    assert not any(looks_like_photo(read_image(None, p, "rgb", size=None)) for p in sketches)


@pytest.mark.parametrize("where", ["root", "photo dir", "plain folder"])
def test_build_keypoints_refuses_photo_folders(where, tmp_path, capsys):
    if where == "root":
        src = SAMPLE
    elif where == "photo dir":
        src = SAMPLE / PHOTO_DIR
    else:  # photos outside any Sketchy layout: known by their pixels
        src = tmp_path / "pictures"
        src.mkdir()
        for p in sorted((SAMPLE / PHOTO_DIR).rglob("*.jpg"))[:12]:
            shutil.copy(p, src / p.name)
    assert main(["build-keypoints", str(src), "-o", str(tmp_path / "k.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "photos" in err and "sketch" in err, err
    if where != "plain folder":
        assert str(SAMPLE / SKETCH_DIR) in err
    assert not (tmp_path / "k.csv").exists()


def test_build_keypoints_refuses_only_a_majority_of_photos(tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    for i, p in enumerate(sorted((SAMPLE / SKETCH_DIR).rglob("*.png"))[:4]):
        shutil.copy(p, src / f"a{i}.png")
    for i, p in enumerate(sorted((SAMPLE / PHOTO_DIR).rglob("*.jpg"))[:4]):
        shutil.copy(p, src / f"b{i}.jpg")   # half photos: each is left to the per-sketch checks
    status = main(["build-keypoints", str(src), "-o", str(tmp_path / "k.csv"), "--no-progress", "--keep-going"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "k.csv").is_file()


def test_psc6k_error_keeps_params_through_pickling():
    import pickle

    exc = pickle.loads(pickle.dumps(ParameterError("`workers` must be >= 1", param="workers")))
    assert isinstance(exc, Psc6kError) and exc.params == ("workers",)
