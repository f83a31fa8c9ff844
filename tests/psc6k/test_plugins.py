"""psc6k/plugins.py: reference models found through the psc6k.models entry points."""

from __future__ import annotations

import logging
import sys
import types
from importlib.metadata import EntryPoint

import psc6k.plugins as plugins


def _fake_group(monkeypatch, targets: dict):
    """Register module attributes ``targets`` ({entry name: object}) as the psc6k.models group."""
    module = types.ModuleType("psc6k_fake_models")
    eps = []
    for name, obj in targets.items():
        setattr(module, name, obj)
        eps.append(EntryPoint(name, f"psc6k_fake_models:{name}", plugins.MODELS_GROUP))
    eps.append(EntryPoint("broken", "psc6k_no_such_module:MODELS", plugins.MODELS_GROUP))
    monkeypatch.setitem(sys.modules, "psc6k_fake_models", module)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [e for e in eps if e.group == group])


def test_models_are_merged_first_registration_wins_and_broken_ones_are_skipped(monkeypatch, caplog):
    _fake_group(monkeypatch, {"b_zoo": {"m1": {"arch": "b"}, "m2": {}}, "a_zoo": {"m1": {"arch": "a"}},
                              "c_bad": ["not", "a", "dict"]})
    with caplog.at_level(logging.WARNING, logger="psc6k.plugins"):
        models = plugins.registered_models()
    assert models == {"m1": {"arch": "a"}, "m2": {}}  # a_zoo before b_zoo: entry points in name order
    assert "broken" in caplog.text and "c_bad" in caplog.text


def test_nothing_registered_is_none(monkeypatch):
    _fake_group(monkeypatch, {})
    assert plugins.registered_models() is None


def test_this_project_registers_the_model_zoo_metadata():
    models = plugins.registered_models()
    assert models and all(isinstance(meta, dict) for meta in models.values())
