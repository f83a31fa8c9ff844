"""`psc6k --help` lists the commands without importing them (psc6k.cli.static_attributes)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

from psc6k.cli import LISTED_ATTRIBUTES, command_help, discover_commands, static_attributes


def test_help_imports_no_command_module():
    code = ("import contextlib, io, json, sys; from psc6k.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: status = main(['--help'])\n"
            "print(json.dumps([status, 'build-keypoints' in out.getvalue(), sorted(m for m in sys.modules "
            "if m.startswith('psc6k.commands.') or m.split('.')[0] in ('pandas', 'scipy', 'cv2', 'sklearn'))]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [0, True, []]


def test_static_attributes_equal_the_imported_ones():
    for name, ep in discover_commands().items():
        found = static_attributes(ep)
        assert found is not None, name
        target = ep.load()
        for attr in LISTED_ATTRIBUTES:
            assert found.get(attr) == getattr(target, attr, None), (name, attr)
        assert command_help(type("T", (), found)) == command_help(target)


def test_what_cannot_be_read_statically_is_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "plug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "computed.py").write_text('HELP = "built " + "at import"\n')
    (pkg / "literal.py").write_text('"""Doc line.\n\nMore."""\nSECTION, ORDER = "plots", 3\n')
    (pkg / "nothing.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = lambda value: EntryPoint("x", value, "psc6k.commands")  # noqa: E731
    assert static_attributes(ep("plug.computed")) is None
    assert static_attributes(ep("plug.nothing")) is None
    assert static_attributes(ep("plug.literal:obj")) is None
    assert static_attributes(ep("plug.missing")) is None
    found = static_attributes(ep("plug.literal"))
    assert (found["SECTION"], found["ORDER"], found["__doc__"].splitlines()[0]) == ("plots", 3, "Doc line.")
