"""The layering rule: the core package ``psc6k`` names none of the parts built on it, and its
commands reach them only through the ``psc6k.commands`` entry points (psc6k/cli.py)."""

from __future__ import annotations

import ast
import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import psc6k
from psc6k.cli import discover_commands, main

CORE = Path(psc6k.__file__).resolve().parent
UPPER = ("evaluation", "annotation_app", "model_zoo", "psc6k_web")  # psc6k_web: the apps' shared web layer
HEAVY = ("torch", "fastapi", "sqlalchemy", "uvicorn", "starlette", "kornia", "timm")
#: Commands of this project, all registered in setup.cfg's [options.entry_points] psc6k.commands.
PROJECT_COMMANDS = {"eval", "synth", "build-pairs", "build-keypoints", "aggregate", "annotate", "serve",
                    "predict", "train", "baseline", "consistency", "report", "demo"}

# An upper part named as a module: an import, a dotted path, or a quoted / literal module name.
# ("evaluation" alone is an ordinary English word, so only its module-like uses count.)
_NAMED = re.compile(r"\b(annotation_app|model_zoo|psc6k_web)\b"
                    r"|\b(?:from|import)\s+evaluation\b|\bevaluation\.\w|[\"'`]evaluation[\"'`.:]")


def _core_modules() -> list[str]:
    names = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_rule_detector_catches_the_ways_a_module_is_named():
    for bad in ("import model_zoo", "from evaluation.pckeval import x", '"evaluation.eval_cli"',
                "importlib.import_module('annotation_app.cli')", "``model_zoo``", "'evaluation'",
                "from psc6k_web.errors import install"):
        assert _NAMED.search(bad), bad
    for fine in ("the leaderboard evaluation and the curve evaluation", "evaluation of PCK", "the model zoo"):
        assert not _NAMED.search(fine), fine


def test_core_source_names_no_upper_part():
    offenders = []
    for path in sorted(CORE.rglob("*")):
        if path.suffix not in (".py", ".md", ".txt", ".cfg", ".toml") or "data/sample" in path.as_posix():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _NAMED.search(line):
                offenders.append(f"{path.relative_to(CORE.parent)}:{n}: {line.strip()}")
    assert not offenders, "core names an upper layer:\n" + "\n".join(offenders)


def test_every_project_command_is_registered_and_loads_lazily():
    commands = discover_commands()
    assert PROJECT_COMMANDS <= set(commands), sorted(PROJECT_COMMANDS - set(commands))
    assert list(commands) == sorted(commands)
    assert commands["eval"].value == "psc6k.commands.eval"


def test_importing_the_core_and_eval_help_load_no_upper_part_and_no_heavy_stack():
    code = (
        "import importlib, io, sys, contextlib, json\n"
        f"for name in {_core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "from psc6k.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['eval', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {UPPER + HEAVY!r})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_eval_runs_without_loading_the_upper_parts(tmp_path):
    from psc6k.data import sample_path
    from psc6k.formats import read_annotations
    from psc6k.submission import Submission, identity_flow, save_submission

    ann = read_annotations(sample_path() / "test_pairs_ps.csv")
    flows = identity_flow(len(ann), 4)
    sub = save_submission(Submission("id", "flow", ann.photo, ann.sketch, flows, flows), tmp_path / "s.npz")
    code = ("import sys, json; from psc6k.cli import main; status = main(['eval', sys.argv[1], '-a', 'sample', "
            "'--json', '--bootstrap', '0']); "
            f"print(json.dumps([status, sorted(m for m in sys.modules if m.split('.')[0] in {UPPER + HEAVY!r})]))")
    r = subprocess.run([sys.executable, "-c", code, str(sub)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [0, []]


def test_top_level_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in PROJECT_COMMANDS:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line is not None and len(line.split(None, 1)[1]) > 10, name
    assert "unavailable" not in out


def test_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert main(["evl"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'evl'" in err and "did you mean eval" in err and "Traceback" not in err


class _FakeEntryPoint:
    def __init__(self, name, error):
        self.name, self.value, self._error = name, f"fake.{name}", error

    def load(self):
        raise self._error


@pytest.mark.parametrize("missing", ["torch", "kornia", "timm"])
def test_missing_model_dependency_gives_the_install_hint(monkeypatch, capsys, missing):
    fake = {"predict": _FakeEntryPoint("predict", ModuleNotFoundError(f"No module named {missing!r}", name=missing))}
    monkeypatch.setattr("psc6k.cli.discover_commands", lambda: fake)
    assert main(["predict", "--help"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err and "pip install 'psc6k[model]'" in err


def test_missing_dependency_at_run_time_gives_the_install_hint(monkeypatch, capsys):
    class Target:
        HELP = "needs torch when it runs"

        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")

    class EP:
        name, value = "predict", "fake"

        @staticmethod
        def load():
            return Target

    monkeypatch.setattr("psc6k.cli.discover_commands", lambda: {"predict": EP})
    assert main(["predict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'psc6k[model]'" in err


def test_a_broken_plugin_does_not_break_the_listing(monkeypatch, capsys):
    real = discover_commands()
    broken = dict(real, zzz=_FakeEntryPoint("zzz", ModuleNotFoundError("No module named 'nothere'", name="nothere")))
    monkeypatch.setattr("psc6k.cli.discover_commands", lambda: broken)
    assert main(["--help"]) == 0
    assert "zzz" in capsys.readouterr().out


def test_demo_reaches_the_model_only_through_the_registered_predict_command(monkeypatch, tmp_path):
    from psc6k import demo

    monkeypatch.setattr("psc6k.cli.discover_commands", lambda: {})
    notes = []
    assert demo._pscnet_submission(tmp_path / "x.pth.tar", None, tmp_path, None, False, notes) is None
    assert notes and "no 'psc6k predict' command" in notes[0]


def _target(help_, **attrs):
    class EP:
        name, value = "fake", "fake"

        @staticmethod
        def load():
            return type("Target", (), {"HELP": help_, **attrs})

    return EP


def test_help_lists_commands_in_workflow_order_and_plugins_after(monkeypatch, capsys):
    real = discover_commands()
    plugins = {"aaa-mine": _target("a third-party command without a section"),
               "zz-plot": _target("a plug-in with its own section", SECTION="plots"),
               "ab-score": _target("a plug-in joining a known section", SECTION="score", ORDER=99)}
    monkeypatch.setattr("psc6k.cli.discover_commands", lambda: dict(real, **plugins))
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headings = [ln[:-1] for ln in lines if ln.endswith(":") and not ln.startswith(" ")]
    from psc6k.cli import OTHER_SECTION, SECTIONS

    sections = [h for h in headings if h in SECTIONS or h in ("plots", OTHER_SECTION)]
    assert sections == [*SECTIONS, "plots", OTHER_SECTION]
    names = [ln.split()[0] for ln in lines if ln.startswith("  ") and not ln.startswith("   ")
             and ln.split()[0] in {*real, *plugins}]
    # eval first, the demo last of the project's commands, a known-section plug-in after its ORDERed peers
    assert names[0] == "eval" and names.index("ab-score") < names.index("build-pairs")
    assert names.index("build-pairs") < names.index("predict") < names.index("report") < names.index("demo")
    assert names[-2:] == ["zz-plot", "aaa-mine"]
    assert set(names) == {*real, *plugins}


# ------------------------------------------------------------------ imports read from the syntax tree
ROOT = CORE.parent
PARTS = ("evaluation", "annotation_app", "model_zoo")
PROJECT = ("psc6k", "psc6k_web", *PARTS)
#: Folders whose modules the import rules below cover (benchmarks and scripts included).
CHECKED = ("psc6k", "psc6k_web", *PARTS, "benchmarks", "scripts")
#: Folders other engineers were still editing when the function-local-import rule came in: their
#: offenders are tolerated until they are clean. Empty it entry by entry (a clean entry fails).
NOT_YET_CLEAN: tuple[str, ...] = ()
#: Parts whose import loads a heavy optional stack (torch; FastAPI / SQLAlchemy / uvicorn): a module
#: outside them may import them inside a function, so that its cheap paths stay cheap.
HEAVY_PARTS = ("model_zoo", "annotation_app", "evaluation.server", "psc6k_web")
#: Modules registered as `psc6k` commands (setup.cfg, entry-point group psc6k.commands).
def _command_modules() -> frozenset[str]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = cfg["options.entry_points"]["psc6k.commands"].strip().splitlines()
    return frozenset(line.split("=", 1)[1].strip().split(":")[0] for line in lines if "=" in line)


COMMAND_MODULES = _command_modules()
#: Calls that import the module named by their first argument.
_IMPORT_CALLS = ("import_module", "__import__", "find_spec")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of ``from ... import`` in ``path`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    package = package if path.name == "__init__.py" else package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, source: str | None = None):
    """``(line, module, in_function)`` of every import in a module's syntax tree (``in_function``:
    the name of the outermost function it sits in, or False): ``import`` and
    ``from ... import`` statements (a name imported from a package counts as its submodule too)
    and calls of ``importlib.import_module`` / ``__import__`` / ``find_spec`` naming a module."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            # the outermost function's name (truthy) once inside one, else False
            inside = in_function or (child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                                     else "<lambda>" if isinstance(child, ast.Lambda) else False)
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(path, child)
                subs = [f"{module}.{a.name}" for a in child.names if _is_module(f"{module}.{a.name}")]
                if len(subs) < len(child.names):  # names defined by the module itself
                    found.append((child.lineno, module, in_function))
                found.extend((child.lineno, sub, in_function) for sub in subs)
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant) \
                    and isinstance(child.args[0].value, str):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in _IMPORT_CALLS:
                    found.append((child.lineno, child.args[0].value, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def _checked_files():
    for folder in CHECKED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _part_of(module: str) -> str:
    return module.split(".")[0]


def test_import_reader_sees_every_spelling():
    src = ("import model_zoo.registry\nfrom evaluation.server import app\nfrom . import db\n"
           "def f():\n    from psc6k.pck import evaluate\n    importlib.import_module('model_zoo.registry')\n"
           "    __import__('annotation_app')\n")
    got = {(m, bool(local)) for _, m, local in imports_of(ROOT / "annotation_app" / "service" / "x.py", src)}
    assert {("model_zoo.registry", False), ("evaluation.server.app", False), ("annotation_app.service", False),
            ("psc6k.pck", True), ("model_zoo.registry", True), ("annotation_app", True)} <= got
    assert ("annotation_app.service.db", False) not in got  # no such file: a name, not a submodule
    assert ("evaluation.server", False) not in got  # `app` is a submodule: the package is not an edge


def test_upper_parts_do_not_import_each_other():
    """evaluation/, annotation_app/ and model_zoo/ build on the core (and the web layer) only, and
    the web layer on the core only: no import statement, no import_module / __import__ call."""
    offenders = []
    for folder in (*PARTS, "psc6k_web"):
        others = {p for p in PARTS if p != folder}
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, module, _ in imports_of(path):
                if _part_of(module) in others:
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not offenders, "an upper part imports another:\n" + "\n".join(offenders)


def _local_project_imports(path: Path, source: str | None = None) -> list[str]:
    here = _module_name(path) if _part_of(_module_name(path)) in PROJECT else ""
    out = []
    for line, module, in_function in imports_of(path, source):
        if not in_function or _part_of(module) not in PROJECT:
            continue
        if in_function == "__getattr__":
            continue  # a module's lazy attribute (PEP 562): the documented way to defer a heavy import
        heavy = next((h for h in HEAVY_PARTS if module == h or module.startswith(h + ".")), None)
        if heavy is not None and (here in COMMAND_MODULES or not (here == heavy or here.startswith(heavy + "."))):
            # a heavy stack, loaded lazily from outside it, or by a command module: `psc6k CMD
            # --help` and the missing-extra hint must not pay for torch / FastAPI
            continue
        out.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    return out


def test_the_project_imports_its_own_modules_at_the_top():
    """Function-local imports hide cycles and cost nothing to hoist for the project's own cheap
    modules; lazy imports are for the heavy optional stacks only (HEAVY_PARTS)."""
    offenders, tolerated = [], {folder: 0 for folder in NOT_YET_CLEAN}
    for path in _checked_files():
        found = _local_project_imports(path)
        rel = path.relative_to(ROOT).as_posix()
        folder = next((f for f in NOT_YET_CLEAN if rel.startswith(f + "/")), None)
        if folder is not None:
            tolerated[folder] += len(found)
        else:
            offenders += found
    assert not offenders, "function-local imports of the project's modules (import them at the top):\n" + \
        "\n".join(offenders)
    clean = [folder for folder, n in tolerated.items() if n == 0]
    assert not clean, f"{clean} are clean now: remove them from NOT_YET_CLEAN"


def test_the_local_import_detector_catches_and_spares():
    src = ("import numpy\nfrom psc6k.pck import evaluate\n"
           "def f():\n    import torch\n    from psc6k.formats import read_annotations\n"
           "def g():\n    from model_zoo.predict import predict\n    from psc6k_web.errors import x\n")
    found = _local_project_imports(ROOT / "benchmarks" / "probe.py", src)
    assert found == ["benchmarks/probe.py:5: psc6k.formats"], found  # not torch, not the heavy parts
    inside = _local_project_imports(ROOT / "model_zoo" / "probe.py", "def f():\n    from model_zoo import cli\n")
    assert inside == ["model_zoo/probe.py:2: model_zoo"], inside  # lazy only from outside a heavy part


def _top_level_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (explicit edges only)."""
    graph = {}
    for path in _checked_files():
        if path.parts[len(ROOT.parts)] in ("benchmarks", "scripts"):
            continue
        graph[_module_name(path)] = {m for _, m, local in imports_of(path) if not local and _part_of(m) in PROJECT}
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle():
    graph = _top_level_graph()
    state, cycles = {}, []

    def walk(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                walk(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
    assert "psc6k.cli" in graph and "psc6k.cli_errors" in graph["psc6k.cli"]  # the graph is real
