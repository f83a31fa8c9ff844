"""The wheel builds without a setuptools warning and carries every data file the package reads:
the bundled sample, the web apps' static files and templates, the model zoo's reference TSVs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("psc6k", "psc6k_web", "evaluation", "annotation_app", "model_zoo")
#: Folders of package data: every file in them must be in the wheel.
DATA_FOLDERS = ("psc6k/data/sample", "annotation_app/static", "evaluation/static", "evaluation/templates",
                "model_zoo/reference")
#: What setuptools prints when the configuration is off (package data outside any package,
#: deprecated metadata, ...). The environment's own notes (pip as root, an index folder missing,
#: byte-compiling disabled by PYTHONDONTWRITEBYTECODE) are not about the package.
SETUPTOOLS_WARNING = re.compile(r"_Warning|DeprecationWarning|SetuptoolsWarning|^\s*warning: (?!.*byte-compiling)",
                                re.IGNORECASE | re.MULTILINE)


def _setuptools_version() -> tuple[int, ...]:
    import setuptools

    return tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory):
    # built offline with this interpreter's setuptools (what pyproject.toml asks for when isolated)
    if _setuptools_version() < (70, 1):  # bdist_wheel built in from 70.1; older ones warn differently too
        pytest.skip(f"setuptools {'.'.join(map(str, _setuptools_version()))} here; the check needs >= 70.1")
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):  # a clean copy: no build/ left in the tree
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(out.glob("psc6k-*.whl"))
    assert len(wheels) == 1
    return proc.stdout + proc.stderr, wheels[0]


def test_wheel_builds_without_setuptools_warnings(wheel_build):
    log, _ = wheel_build
    assert not SETUPTOOLS_WARNING.findall(log), "\n".join(
        line for line in log.splitlines() if SETUPTOOLS_WARNING.search(line))[:3000]


def test_the_warning_pattern_catches_setuptools_warnings():
    assert SETUPTOOLS_WARNING.search("build_py.py:215: _Warning: Package 'psc6k.data.sample' is absent")
    assert SETUPTOOLS_WARNING.search("  warning: no files found matching '*.tsv'")
    assert not SETUPTOOLS_WARNING.search("warning: build_py: byte-compiling is disabled, skipping.")


def test_wheel_carries_every_data_file(wheel_build):
    _, wheel = wheel_build
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in DATA_FOLDERS:
        files = [p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        assert files, folder
        missing = sorted(set(files) - names)
        assert not missing, f"{folder}: {len(missing)} files not in the wheel, e.g. {missing[:3]}"
    assert "psc6k/data/sample/test_pairs_ps.csv" in names
    assert not [n for n in names if "__pycache__" in n]
