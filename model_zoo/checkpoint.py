"""Reading and writing PSCNet checkpoints: the released ones and ours, one loader for both.

Released layout (``psc_resnet18.pth.tar``, ``psc_resnet101.pth.tar``; SPEC §6): a ``torch.save``d
dict whose ``state_dict`` holds the whole network, keys optionally prefixed ``module.`` (DDP), the
encoder present under both ``encoder_q.`` and ``framework.encoder_q.``. Other entries
(``epoch``, ``arch``, ``optimizer``, ``scaler``) are allowed and ignored for inference.

Our layout adds ``format`` (:data:`CHECKPOINT_FORMAT`), ``config`` (``{"model": PSCNetConfig
dict, "train": ...}``) and the training state (``optimizer``, ``scaler``, ``epoch``, ``step``).
The ``state_dict`` keys are the released ones, so released tools read our checkpoints too.

Loading is strict: every key must be used and every shape must match, otherwise a
:class:`CheckpointError` lists the missing, unexpected and mis-shaped keys by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from model_zoo.pscnet import PSCNet, PSCNetConfig
from model_zoo.resnet_cbn import RESNET_LAYERS
from psc6k.errors import Psc6kError

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "read_checkpoint", "load_checkpoint", "load_state_dict_strict",
           "infer_config", "save_checkpoint", "normalize_keys", "read_encoder_init", "load_encoder_init"]

CHECKPOINT_FORMAT = "psc6k-pscnet/1"
_LIST_LIMIT = 12


class CheckpointError(Psc6kError):
    """A checkpoint file is missing, unreadable, or does not fit the PSCNet layout."""


def _names(keys, limit: int = _LIST_LIMIT) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_checkpoint(path, map_location="cpu", *, trusted: bool = False) -> dict:
    """Load a checkpoint file into a dict with a ``state_dict`` entry.

    Parameters
    ----------
    path : path-like
    map_location : str or torch.device
    trusted : bool
        Allow arbitrary pickled objects (``torch.load(weights_only=False)``). Only for files you
        trust; tensors, numbers, strings, lists and dicts load without it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as exc:  # noqa: BLE001 - any failure here is "not a readable checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if trusted:
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {first}") from None
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {first} (if it is a checkpoint you trust that "
                              "stores Python objects, set `trust_checkpoint`)", param="trust_checkpoint") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        state = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = {"state_dict": obj}  # a bare state dict
        state = obj["state_dict"]
    else:
        raise CheckpointError(f"{str(path)!r} is not a PSCNet checkpoint: expected a dict with a 'state_dict' entry"
                              f" (found {type(obj).__name__}"
                              + (f" with keys {_names(obj.keys())}" if isinstance(obj, dict) else "") + ")")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r}: 'state_dict' must map names to tensors")
    obj["state_dict"] = normalize_keys(state)
    obj["_path"] = str(path)
    return obj


def normalize_keys(state: dict) -> dict:
    """Strip the ``module.`` prefixes that DistributedDataParallel adds."""
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def infer_config(ckpt: dict) -> PSCNetConfig:
    """The architecture of a checkpoint: ``config["model"]`` when present (ours), else read from
    the state-dict shapes (released): arch from block counts and type, widths, STN sizes, queue."""
    cfg = ckpt.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        try:
            return PSCNetConfig.from_dict(cfg["model"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{ckpt.get('_path', 'checkpoint')}: bad model config: {exc}") from None
    state = ckpt["state_dict"]
    where = ckpt.get("_path", "checkpoint")
    if "encoder_q.conv1.weight" not in state:
        raise CheckpointError(f"{where}: not a PSCNet checkpoint: no 'encoder_q.conv1.weight' "
                              f"(keys start with {_names({k.split('.')[0] for k in state})})")
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"encoder_q\.layer{stage}\.(\d+)\.", k))}
        blocks.append(max(ids) + 1 if ids else 0)
    bottleneck = any(k.startswith("encoder_q.layer1.0.conv3.") for k in state)
    arch = next((name for name, (block, layers) in RESNET_LAYERS.items()
                 if tuple(layers) == tuple(blocks) and (block.expansion == 4) == bottleneck), None)
    if arch is None:
        raise CheckpointError(f"{where}: encoder with blocks {blocks} ({'bottleneck' if bottleneck else 'basic'})"
                              f" is none of {sorted(RESNET_LAYERS)}")
    kwargs = {"arch": arch, "width": int(state["encoder_q.conv1.weight"].shape[0])}
    nets = sorted((int(m.group(1)) for k in state if (m := re.match(r"stn\.net_(\d+)x\.0\.weight$", k))))
    if nets:
        kwargs["block_sizes"] = tuple(nets)
    if "stn.base_map" in state:
        kwargs["flow_size"] = int(state["stn.base_map"].shape[1])
    if nets:
        w0 = state[f"stn.net_{nets[0]}x.0.weight"]
        kwargs["feat_size"] = int(w0.shape[-1]) * nets[0]
        n_corr = int(w0.shape[1]) // kwargs["feat_size"] ** 2
        # the last n_corr stages up to layer3: (2, 3) in the released models
        kwargs["corr_layers"] = tuple(range(4 - n_corr, 4))
        n_convs = sum(1 for k in state if re.match(rf"stn\.net_{nets[0]}x\.\d+\.running_mean$", k))
        kwargs["stn_layers"] = n_convs - 1
    if "framework.queue" in state:
        kwargs["moco_dim"], kwargs["moco_queue"] = (int(s) for s in state["framework.queue"].shape)
    return PSCNetConfig(**kwargs)


def load_state_dict_strict(model: PSCNet, state: dict, where: str = "checkpoint", *, assign: bool = False) -> None:
    """Load ``state`` (``module.`` prefixes allowed) into ``model``: every key used, every shape checked.

    Raises
    ------
    CheckpointError
        Naming the missing, unexpected and mis-shaped keys, or the first key whose two copies
        (``encoder_q.*`` and ``framework.encoder_q.*``) disagree.
    """
    state = normalize_keys(state)
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_names(shapes)}")
        raise CheckpointError(f"{where} does not fit PSCNet({model.config.arch}): " + "; ".join(parts))
    # encoder_q/encoder_k are registered twice (top level and under framework.): one tensor each,
    # so two different copies in a file would silently keep only one of them
    for key in expected:
        if key.startswith("framework.encoder_"):
            alias = key[len("framework."):]
            a, b = state[key], state[alias]
            if a.shape == b.shape and not torch.equal(a, b):
                raise CheckpointError(f"{where}: {alias} and {key} hold different values; the released layout"
                                      " stores the same encoder twice")
    if assign:
        # the model was built on the meta device: adopt the checkpoint's tensors (float32)
        state = {k: v.float() if v.is_floating_point() and v.dtype != expected[k].dtype else v
                 for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.reset_constants()
    else:
        model.load_state_dict(state, strict=True)


def load_checkpoint(path, map_location="cpu", *, config: PSCNetConfig | None = None, trusted: bool = False,
                    return_checkpoint: bool = False):
    """Build a PSCNet from a checkpoint file (released or ours), in eval mode.

    Parameters
    ----------
    path : path-like
    map_location : str or torch.device
    config : PSCNetConfig, optional
        Architecture to build; inferred from the checkpoint when omitted.
    trusted : bool
        See :func:`read_checkpoint`.
    return_checkpoint : bool
        Also return the raw checkpoint dict (training state for resuming).

    Returns
    -------
    PSCNet, or (PSCNet, dict) with ``return_checkpoint``.
    """
    ckpt = read_checkpoint(path, map_location, trusted=trusted)
    config = config or infer_config(ckpt)
    with torch.device("meta"):  # no random initialisation of weights that are overwritten anyway
        model = PSCNet(config)
    load_state_dict_strict(model, ckpt["state_dict"], where=str(path), assign=True)
    model.eval()
    return (model, ckpt) if return_checkpoint else model


def save_checkpoint(path, model: PSCNet, *, train_config: dict | None = None, **training_state) -> Path:
    """Write our checkpoint: released-layout ``state_dict`` + ``config`` + training state.

    Written to a temporary file first and renamed, so an interrupted save never leaves a
    truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)
    state = {
        "format": CHECKPOINT_FORMAT,
        "arch": module.config.arch,
        "config": {"model": module.config.to_dict(), "train": train_config or {}},
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        **training_state,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- encoder initialisation
_BN_KEY = re.compile(r"^(.*(?:\.|^)(?:bn\d+|downsample\.1))\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def read_encoder_init(path) -> tuple[dict, str]:
    """The plain torchvision-layout ResNet weights in an encoder-initialisation file.

    Accepts the authors' ``moco_imagenet_resnet{18,101}_reformat.pth.tar`` (``state_dict`` of
    torchvision keys), a bare torchvision ResNet state dict, and a MoCo v2 checkpoint
    (``state_dict`` with ``module.encoder_q.*`` keys; the key encoder and queue are ignored).
    ``fc.*`` (the classifier or the MoCo MLP) is dropped, as the authors' loader does.

    Returns
    -------
    state : dict
        torchvision ResNet keys (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight`` ...).
    layout : str
        ``"moco_v2"`` or ``"resnet"`` (the authors' reformat files and bare torchvision dicts).
    """
    state = read_checkpoint(path)["state_dict"]  # a bare state dict comes back wrapped, prefixes removed
    layout = "resnet"
    moco = [k for k in state if k.startswith(("module.encoder_q.", "encoder_q."))]
    if moco:
        layout = "moco_v2"
        state = {k.split("encoder_q.", 1)[1]: v for k, v in state.items() if k in moco}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}, layout


def load_encoder_init(model: PSCNet, path) -> str:
    """Initialise ``model``'s query and key encoders from plain ResNet weights (:func:`read_encoder_init`).

    Every BatchNorm entry (``...bnN.*``, ``...downsample.1.*``) is copied into both conditions
    (``...norms.0.*`` and ``...norms.1.*``), as the authors' loader does. The MoCo head, queue and
    warp estimator keep their fresh initialisation.

    Raises
    ------
    CheckpointError
        Naming the first encoder key the file lacks, a key it has that the encoder does not, or
        a shape mismatch.
    """
    state, layout = read_encoder_init(path)
    encoder = model.encoder_q
    expected = encoder.state_dict()
    mapped: dict = {}
    for key, value in state.items():
        m = _BN_KEY.match(key)
        targets = ([f"{m.group(1)}.norms.{c}.{m.group(2)}" for c in range(encoder.num_conditions)]
                   if m else [key])
        for t in targets:
            if t not in expected:
                raise CheckpointError(f"{path}: key {key!r} does not fit the {model.config.arch} encoder "
                                      f"(width {model.config.width})")
            if tuple(value.shape) != tuple(expected[t].shape):
                raise CheckpointError(f"{path}: key {key!r} has shape {tuple(value.shape)}, the "
                                      f"{model.config.arch} encoder needs {tuple(expected[t].shape)}")
            mapped[t] = value
    missing = [k for k in expected if k not in mapped]
    if missing:
        plain = re.sub(r"\.norms\.\d+\.", ".", missing[0])
        raise CheckpointError(f"{path}: missing encoder key {plain!r} ({len(missing)} encoder entries missing)")
    encoder.load_state_dict(mapped, strict=True)
    model.encoder_k.load_state_dict(mapped, strict=True)
    return layout
