"""Service information: ``GET /health``, ``GET /models`` and ``/`` (redirects to the board)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import RedirectResponse

from psc6k.errors import FormatError
from psc6k.inputs import read_text
from psc6k.plugins import registered_models

from ..deps import AppState, Settings
from ..models import Health, ModelList

router = APIRouter(tags=["service"])
log = logging.getLogger("psc6k.server")


@router.get("/", include_in_schema=False)
def root():
    return RedirectResponse("/leaderboard.html")


@router.get("/health", response_model=Health, summary="Liveness and what this server scores against")
def health(state: AppState, settings: Settings):
    return {"status": "ok", "scorer_version": state.scorer.scorer_version, "private": settings.private,
            "split": settings.split_name, "n_pairs": len(state.scorer.annotations),
            "annotations_sha256": state.scorer.annotations_sha256}


def _metadata(obj) -> dict:
    """Model-zoo registry values may be dataclasses, dicts or plain objects; keep JSON-able fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = dataclasses.asdict(obj)
    elif isinstance(obj, dict):
        data = dict(obj)
    else:
        data = {k: v for k, v in vars(obj).items() if not k.startswith("_")} if hasattr(obj, "__dict__") else \
            {"value": str(obj)}
    return jsonable_encoder(data, custom_encoder={Path: str, type: lambda t: t.__name__},
                            sqlalchemy_safe=True) if data else {}


def load_registry():
    """The reference models registered in the ``psc6k.models`` entry-point group (the model zoo
    registers its metadata there, no torch), else None: this server imports no other part."""
    return registered_models()


def load_model_scores(path: str | None, names: list[str]) -> dict:
    """Scores file of ``--model-scores``: ``{model_name: eval_json}``, or a single ``psc6k eval
    --json`` result, which is attributed to the first model."""
    if not path:
        return {}
    text = read_text(path, what="a JSON file of psc6k eval results", max_bytes=64 * 1024 * 1024)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"malformed JSON ({str(exc)[:200]})", file=path) from None
    if isinstance(data, dict) and "overall" in data:
        return {names[0] if names else data.get("method", "model"): data}
    return data if isinstance(data, dict) else {}


@router.get("/models", response_model=ModelList, summary="Reference models of the model zoo and their scores")
def models(state: AppState):
    registry = load_registry()
    names = list(registry) if registry else []
    scores = state.model_scores
    if state.settings.private:  # scores on a hidden split: aggregates only, as everywhere else
        scores = {k: state.scorer.private_reply(v) if isinstance(v, dict) else v for k, v in scores.items()}
    out = []
    for name in names:
        try:
            meta = _metadata(registry[name])
        except Exception:  # a registry entry we cannot describe must not break the endpoint
            log.warning("cannot describe model %r", name, exc_info=True)
            meta = {}
        out.append({"name": name, "metadata": meta, "scores": scores.get(name)})
    for name, score in scores.items():  # scores of checkpoints the registry does not list
        if name not in names:
            out.append({"name": name, "metadata": {}, "scores": score})
    note = None if registry is not None else "the model zoo registry (model_zoo.registry) is not installed"
    if registry is not None and not scores:
        note = "no scores configured (start the server with --model-scores scores.json)"
    return {"models": out, "note": note}
