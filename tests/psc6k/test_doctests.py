"""The examples in the core's docstrings run and print what they say (``doctest``).

Every module of the ``psc6k`` package is collected, so a new module's examples are checked
without editing this file. Only the core: upper parts may need torch or a server.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import psc6k

SKIP = {"psc6k.__main__"}  # runs the CLI on import
MODULES = sorted(m.name for m in pkgutil.walk_packages(psc6k.__path__, "psc6k.") if m.name not in SKIP)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (run " \
                               f"python -m doctest -v on the module)"


def test_the_core_has_examples_to_check():
    """Guards the collection itself: an empty MODULES list would pass every test above."""
    assert "psc6k.pck" in MODULES and "psc6k.sketchy" in MODULES and len(MODULES) > 20
