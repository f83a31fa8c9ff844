"""Reference PSCNet model (PyTorch). The only part of psc6k that imports torch.

Importing ``model_zoo`` is cheap (no torch); the submodules import torch::

    from model_zoo.pscnet import PSCNet                # the network
    from model_zoo.checkpoint import load_checkpoint   # released or our checkpoints
    from model_zoo.predict import predict_submission   # pairs -> flow Submission
    from model_zoo.train import TrainConfig, train     # encoder / estimator training (train is
                                                       # reached as model_zoo.train.train)
    from model_zoo.registry import MODELS              # metadata, no torch

The names above are also reachable lazily as ``model_zoo.PSCNet`` etc.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "PSCNet": "model_zoo.pscnet", "PSCNetConfig": "model_zoo.pscnet",
    "load_checkpoint": "model_zoo.checkpoint", "save_checkpoint": "model_zoo.checkpoint",
    "CheckpointError": "model_zoo.checkpoint",
    "predict_submission": "model_zoo.predict",
    "TrainConfig": "model_zoo.train",
    "MODELS": "model_zoo.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model_zoo' has no attribute {name!r}")
