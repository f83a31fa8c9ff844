"""What installed distributions add to psc6k through entry points, besides commands
(:func:`psc6k.cli.discover_commands`): reference models.

The parts of the project that build on the core do not import each other; a part that shows
another's data finds it here: the model zoo registers the metadata of its released models (a
module without torch) in the group ``psc6k.models``, and the scoring server lists them.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

#: Entry-point group of reference-model metadata: each target is a ``{name: metadata}`` dict.
MODELS_GROUP = "psc6k.models"
log = logging.getLogger("psc6k.plugins")


def registered_models(group: str = MODELS_GROUP) -> dict | None:
    """The reference models registered by installed distributions, merged in name order of their
    entry points (the first registration of a model name wins); None when none is registered.

    An entry point that cannot be loaded, or is not a dict, is skipped with a warning: one broken
    plug-in must not hide the others.
    """
    found: dict = {}
    registered = False
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            models = ep.load()
        except Exception:
            log.warning("cannot load the models registered as %r (%s)", ep.name, ep.value, exc_info=True)
            continue
        if not isinstance(models, dict):
            log.warning("the models registered as %r (%s) are not a dict", ep.name, ep.value)
            continue
        registered = True
        for name, meta in models.items():
            found.setdefault(name, meta)
    return found if registered else None
