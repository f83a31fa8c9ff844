"""PSCNet training: the encoder (MoCo v2 on photo-sketch pairs) and the warp estimator (weighted
perceptual similarity + forward-backward consistency), on CPU, one GPU, or many through torchrun.

One :class:`TrainConfig` describes a run. :func:`train` reads the train split of a
Sketchy-shaped tree (``train_pairs_ps.csv`` through :func:`psc6k.formats.read_train_pairs`),
writes resumable checkpoints (:func:`model_zoo.checkpoint.save_checkpoint`), metrics as JSONL and
CSV, and PNG plots of the losses and of PCK on a held-out annotation set, scored by
:func:`psc6k.pck.evaluate` (the one PCK implementation).

Distributed: launched with ``torchrun --nproc_per_node G -m psc6k.cli train ...`` each process
trains on its shard (DistributedSampler), gradients are averaged by DDP, MoCo uses shuffle-BN
and a queue fed with the keys of all processes; rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from model_zoo.augment import WARP_KINDS, WarpRanges, apply_warp, color_augmentation, random_warp_batch
from model_zoo.checkpoint import (CheckpointError, infer_config, load_encoder_init, load_state_dict_strict,
                                  read_checkpoint, save_checkpoint)
from model_zoo.data import ImageError, PairDataset, PhotoEpochDataset, unwrap_worker_error
from model_zoo.losses import (consistency_loss, masked_mse, released_consistency_loss, similarity_loss,
                              warp_features)
from model_zoo.predict import predict_submission, resolve_device
from model_zoo.pscnet import PHOTO, SKETCH, PSCNet, PSCNetConfig
from model_zoo.resnet_cbn import share_batchnorm
from model_zoo.stn import identity_grid
from psc6k.csvsafe import safe_row
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_train_pairs
from psc6k.pck import evaluate
from psc6k.submission import Submission, identity_flow

__all__ = ["TrainConfig", "EncoderObjective", "EstimatorObjective", "train", "lr_at_epoch",
           "resolved_config", "RECIPES", "role_index", "knn_accuracy", "holdout_split", "build_training_model"]

TASKS = ("encoder", "estimator")
RECIPES = ("released", "paper")
SUPERVISIONS = ("pair", "class", "instance")
DEFAULT_LR = {"encoder": 0.03, "estimator": 0.003}

#: the architecture options of the authors' ``train_psc.py`` -> PSCNetConfig fields
ARCH_OPTIONS = {"arch": "arch", "layer": "corr_layers", "feat_size": "feat_size", "stn_size": "flow_size",
                "stn_layer": "stn_layers", "moco_dim": "moco_dim", "moco_k": "moco_queue", "moco_m": "moco_momentum",
                "moco_t": "moco_temperature"}


@dataclasses.dataclass
class TrainConfig:
    """One training run. Field names are the authors' ``train_psc.py`` options where they have one
    (SPEC §6.1), psc6k's own otherwise. Paths are strings so that the config is stored as JSON.

    The architecture (``arch``, ``layer``, ``feat_size``, ``stn_size``, ``stn_layer``, ``moco_*``
    and psc6k's ``width`` ...) lives in ``model``: PSCNetConfig overrides; :func:`resolved_config`
    reports it under the authors' names.
    """

    task: str
    images: str | None = None
    train_pairs: str | None = None
    out_dir: str | None = None
    recipe: str = "released"
    val_annotations: str | None = None
    val_pairs: int = 200
    model: dict = dataclasses.field(default_factory=dict)   # PSCNetConfig overrides
    init: str | None = None        # full PSCNet weights (e.g. the encoder run's checkpoint)
    init_encoder: str | None = None  # plain ResNet weights (ImageNet MoCo, torchvision)
    resume: str | None = None      # continue this run (weights + optimizer + epoch)
    # --- the authors' options (train_psc.py), their defaults
    batch_size: int = 256          # effective (global) batch
    epochs: int = 1500
    warmup_epochs: int = 100
    cos: bool = True
    lr: float | None = None        # default: 0.03 encoder, 0.003 estimator
    momentum: float = 0.9
    weight_decay: float = 1e-4
    supervision: str = "pair"
    clr_loss_weight: float = 1.0
    sim_loss_weight: float = 0.1
    con_loss_weight: float = 1.0
    syn_loss_weight: float = 0.0
    corr_t: float = 0.001
    trans_type: tuple = ("affine", "tps", "afftps")
    freeze: bool = True
    cbn: bool = True
    weighted: bool = True
    perceptual: bool = True
    knn_freq: int = 50
    pck_freq: int = 100
    save_freq: int = 50
    seed: int = 0
    # --- psc6k's own
    accumulate: int = 1            # micro-batches per optimizer step (effective batch unchanged)
    max_steps: int | None = None   # stop after this many optimizer steps (0: write the initial checkpoint)
    time_limit: float | None = None  # stop (evaluate, save) after this many seconds of training
    image_size: int = 256
    amp: bool = True
    device: str = "auto"
    workers: int = 2
    log_every: int = 10            # optimizer steps between metric records
    progress: bool = True
    warp_strength: float = 1.0     # scales the authors' warp ranges (1 = theirs)
    jitter_p: float = 1.0          # colour-jitter probability (kornia default 1, as theirs)
    holdout_categories: int = 0    # leave N training categories out (paper Appendix C)
    holdout_seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise Psc6kError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.recipe not in RECIPES:
            raise Psc6kError(f"`recipe` must be one of {RECIPES}, got {self.recipe!r}")
        if self.supervision not in SUPERVISIONS:
            raise Psc6kError(f"`supervision` must be one of {SUPERVISIONS}, got {self.supervision!r}")
        bad = [t for t in self.trans_type if t not in WARP_KINDS]
        if bad or not self.trans_type:
            raise Psc6kError(f"`trans_type` takes one or more of {WARP_KINDS}, got {list(self.trans_type)}")
        self.trans_type = tuple(self.trans_type)
        if self.accumulate < 1:
            raise Psc6kError("`accumulate` must be >= 1")
        if self.batch_size % self.accumulate:
            raise Psc6kError(f"`batch_size` {self.batch_size} is not divisible by `accumulate` {self.accumulate}")
        if self.batch_size // self.accumulate < 2:
            raise Psc6kError("`batch_size` / `accumulate` must be >= 2 (BatchNorm needs a batch)")
        if self.epochs < 1:
            raise Psc6kError("`epochs` must be >= 1")
        if self.warmup_epochs < 0:
            raise Psc6kError("`warmup_epochs` must be >= 0")
        for name in ("knn_freq", "pck_freq", "save_freq", "log_every"):
            if getattr(self, name) < 1:
                raise Psc6kError(f"`{name}` must be >= 1")
        if self.max_steps is not None and self.max_steps < 0:
            raise Psc6kError("`max_steps` must be >= 0")
        if self.holdout_categories < 0:
            raise Psc6kError("`holdout_categories` must be >= 0")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.task]

    @property
    def epochs_run(self) -> int:
        """Epochs the loop trains (and the cosine horizon): ``epochs + 1`` under the released
        recipe (their ``args.epochs = args.epochs + 1`` in ``train_psc.py``), ``epochs`` under paper."""
        return self.epochs + 1 if self.recipe == "released" else self.epochs

    @property
    def shared_bn(self) -> bool:
        """One BatchNorm for both conditions: the authors' code (released recipe) or ``--no-cbn``."""
        return self.recipe == "released" or not self.cbn

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["trans_type"] = list(self.trans_type)
        return d


def model_config(cfg: TrainConfig, base: PSCNetConfig | None = None) -> PSCNetConfig:
    """The architecture of a run: ``base`` (a checkpoint's, else the released defaults) + ``cfg.model``."""
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()}
    try:
        return dataclasses.replace(base or PSCNetConfig(), **overrides)
    except (TypeError, ValueError) as exc:
        raise Psc6kError(f"bad model configuration {cfg.model}: {exc}") from None


def resolved_config(cfg: TrainConfig, arch: PSCNetConfig | None = None) -> dict:
    """The run's recipe as one flat dict: the authors' option names (SPEC §6.1) plus psc6k's own.

    ``arch`` is the model's configuration (default: what ``cfg`` builds without a checkpoint).
    """
    arch = arch or model_config(cfg)
    d = cfg.to_dict()
    d.pop("model")
    d["lr"] = cfg.learning_rate
    for option, field in ARCH_OPTIONS.items():
        value = getattr(arch, field)
        d[option] = list(value) if isinstance(value, tuple) else value
    d["model"] = {k: v for k, v in arch.to_dict().items() if k not in ARCH_OPTIONS.values()}
    # what the recipe switches (docs/model_zoo.md, "recipes")
    d["bn_per_condition"] = not cfg.shared_bn
    d["sim_softmax_over"] = "source" if cfg.recipe == "released" else "target"
    d["con_loss"] = "nearest, one direction (trainer.py)" if cfg.recipe == "released" else "bilinear, both directions (Eq. 7)"
    d["epochs_run"] = cfg.epochs_run
    d["roles_flip_with"] = "batch index within the epoch" if cfg.recipe == "released" else "global step"
    d["bn_only_passes"] = ("warped source (estimator), keys through the query encoder (encoder)"
                           if cfg.recipe == "released" else "none")
    return dict(sorted(d.items()))


def lr_at_epoch(epoch: int, epochs: int, base_lr: float, warmup_epochs: int = 0, cos: bool = True) -> float:
    """The authors' schedule (``adjust_learning_rate`` in ``train_psc.py``), set once per epoch.

    ``epochs`` is the number of epochs the run trains (:attr:`TrainConfig.epochs_run`: their
    ``--epochs N`` trains N + 1, the cosine horizon included). ``base * (epoch + 1) / warmup``
    while ``epoch + 1 < warmup``, then half-cycle cosine over ``(epoch - warmup) / (epochs -
    warmup)`` (the first cosine epoch, ``warmup - 1``, sits a hair above the base rate as in
    theirs), constant with ``cos=False``.
    """
    if epoch + 1 < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    if not cos:
        return base_lr
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _conditions(index: int) -> tuple[int, int]:
    """Which modality is the source/query: photo -> sketch at even ``index``, the reverse at odd.

    ``index`` is :func:`role_index`'s: the batch index within the epoch (released) or the global
    optimizer step (paper)."""
    return (PHOTO, SKETCH) if index % 2 == 0 else (SKETCH, PHOTO)


def role_index(recipe: str, batch_in_epoch: int, step: int) -> int:
    """The counter whose parity picks the roles (:func:`_conditions`).

    ``released``: their ``i % 2`` over ``enumerate(train_loader)`` (``trainer.py``), restarting
    photo-first every epoch; ``paper``: the global step, so the roles alternate strictly across
    epoch boundaries (each modality is the source of half the steps of any run)."""
    return batch_in_epoch if recipe == "released" else step


class _Augment(nn.Module):
    """Colour pipeline + random warps of one kind per sample (their ``--trans-type``).

    ``grids``, when set, is a callable ``(n, size, device) -> [n, size, size, 2]`` that replaces
    the random warp generator (``benchmarks/bench_train_step.py`` feeds both trainers the same
    grids); ``enabled = False`` switches colour and warps off (tests compare updates exactly).
    """

    def __init__(self, trans_type=WARP_KINDS, warp_strength: float = 1.0, jitter_p: float = 1.0):
        super().__init__()
        self.color = color_augmentation(jitter_p=jitter_p)
        self.trans_type = tuple(trans_type)
        self.ranges = WarpRanges().scaled(warp_strength)
        self.enabled = True
        self.grids = None

    def colour(self, images: Tensor) -> Tensor:
        return self.color(images) if self.enabled else images

    def grid(self, n: int, size: int, device) -> Tensor:
        """A random warp grid [n, size, size, 2] (normalised coordinates, ``align_corners=True``)."""
        if self.grids is not None:
            return self.grids(n, size, device)
        return random_warp_batch(n, size, self.trans_type, ranges=self.ranges, device=device)

    def warp_with_grid(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images`` warped by a random grid, and the grid (the identity when switched off)."""
        if not self.enabled:
            return images, identity_grid(images.shape[-1]).to(images.device).expand(len(images), -1, -1, -1)
        grid = self.grid(len(images), images.shape[-1], images.device)
        return apply_warp(images, grid), grid

    def warp(self, images: Tensor) -> Tensor:
        return self.warp_with_grid(images)[0]


class EncoderObjective(nn.Module):
    """MoCo v2 loss of one batch of photo-sketch pairs (their ``step_pair`` / ``step_instance``).

    Query and key are colour-augmented and randomly warped independently. ``supervision``:
    ``pair`` (and ``class``, whose pairing is made by the data): query from one modality, key
    from the other, alternating with ``step`` (the counter of :func:`role_index`); ``instance``:
    query and key are two augmentations of the same image (photos at even ``step``, sketches at odd).
    ``recipe="released"`` also passes the key images through the query encoder (their ``k_res``,
    kept for visualisation; its only effect is on the query encoder's BatchNorm running
    statistics).
    """

    def __init__(self, model: PSCNet, warp_strength: float = 1.0, *, supervision: str = "pair",
                 trans_type=WARP_KINDS, jitter_p: float = 1.0, clr_loss_weight: float = 1.0,
                 recipe: str = "released"):
        super().__init__()
        self.model = model
        self.augment = _Augment(trans_type, warp_strength, jitter_p)
        self.supervision = supervision
        self.clr_loss_weight = clr_loss_weight
        self.recipe = recipe

    def _view(self, images: Tensor) -> Tensor:
        return self.model.normalize(self.augment.warp(self.augment.colour(images)))

    def forward(self, photo: Tensor, sketch: Tensor, step: int, *, first: bool = True,
                enqueue: bool = True) -> dict[str, Tensor]:
        c_q, c_k = _conditions(step)
        if self.supervision == "instance":
            im_q = im_k = photo if c_q == PHOTO else sketch
            c_k = c_q
        else:
            im_q, im_k = (photo, sketch) if c_q == PHOTO else (sketch, photo)
        # their order: colour query, colour key, then the warps (query grid first); the grids do
        # not depend on the images, so drawing them in this order gives the same pairs of views
        view_q, view_k = self._view(im_q), self._view(im_k)
        out = self.model.framework(view_q, view_k, c_q, c_k, update_key=first, enqueue=enqueue,
                                   keys_through_query=self.recipe == "released")
        logits, labels = out[0], out[1]
        moco = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(1) == labels).float().mean()
        result = {"loss": self.clr_loss_weight * moco, "moco": moco.detach(), "acc1": acc.detach()}
        if not enqueue:
            result["keys"] = out[2]
        return result


class EstimatorObjective(nn.Module):
    """Warp-estimator losses of one batch (their ``trainer.py`` estimator step; SPEC §6, §6.1).

    The source is colour-augmented, the target colour-augmented and randomly warped; both are
    encoded (no gradient into the estimator's inputs); the STN predicts the flows both ways;
    each image is warped onto the other's grid with the predicted flow, encoded again
    (``perceptual``; else its features are warped instead) and compared with the other's
    features (weighted similarity, temperature ``corr_t``); the two flows must invert each other
    (consistency). ``recipe`` picks the similarity softmax axis, the consistency term and the
    encoder passes (docs/model_zoo.md). Optionally (``syn_loss_weight`` > 0) the STN regresses a
    known warp of the source.

    Encoder passes (all in train mode, each updating the query encoder's BatchNorm running
    statistics): ``released`` -- as their ``trainer.py``: warped target, warped source (their
    ``feat_src_aug``; used only by the synthetic loss), unwarped source, then the two re-encoded
    warped images; ``paper`` -- only what the losses use: source, warped target, the two
    re-encoded warped images (and a warped source when ``syn_loss_weight`` > 0).
    """

    def __init__(self, model: PSCNet, corr_t: float = 0.001, sim_loss_weight: float = 0.1,
                 con_loss_weight: float = 1.0, syn_loss_weight: float = 0.0, warp_strength: float = 1.0, *,
                 recipe: str = "released", weighted: bool = True, perceptual: bool = True,
                 trans_type=WARP_KINDS, jitter_p: float = 1.0):
        super().__init__()
        self.model = model
        self.augment = _Augment(trans_type, warp_strength, jitter_p)
        self.tau, self.lambda_sim, self.lambda_con, self.lambda_syn = corr_t, sim_loss_weight, con_loss_weight, syn_loss_weight
        self.recipe, self.weighted, self.perceptual = recipe, weighted, perceptual

    def _similarity(self, warped, target) -> Tensor:
        m = self.model
        axis = "source" if self.recipe == "released" else "target"
        return similarity_loss(warped, target, m.config.corr_layers, m.config.flow_size, self.tau,
                               weighted=self.weighted, softmax_over=axis)

    def _encode_inputs(self, src: Tensor, dst: Tensor, c_src: int, c_dst: int):
        """Source and warped-target features, and (released) the warped source's with its grid."""
        m, aug = self.model, self.augment
        if self.recipe == "released":
            # trainer.py: grids src then dst; colour src_aug, dst_aug, src_raw (three draws);
            # encode dst_aug, src_aug, src_raw (the last under no_grad)
            src_aug, grid_src = aug.warp_with_grid(aug.colour(src))
            dst = aug.warp(aug.colour(dst))
            src = aug.colour(src)
            with torch.no_grad():
                feat_dst = m.encode(dst, c_dst)
                feat_aug = m.encode(src_aug, c_src)
                feat_src = m.encode(src, c_src)
            return src, dst, feat_src, feat_dst, feat_aug, grid_src
        src = aug.colour(src)
        dst = aug.warp(aug.colour(dst))
        with torch.no_grad():
            feat_src = m.encode(src, c_src)
            feat_dst = m.encode(dst, c_dst)
        return src, dst, feat_src, feat_dst, None, None

    def forward(self, photo: Tensor, sketch: Tensor, step: int, **_) -> dict[str, Tensor]:
        m = self.model
        c_src, c_dst = _conditions(step)
        src, dst = (photo, sketch) if c_src == PHOTO else (sketch, photo)
        src, dst, feat_src, feat_dst, feat_aug, grid_src = self._encode_inputs(src, dst, c_src, c_dst)
        layers = m.config.corr_layers
        flow_fwd = m.estimate(feat_src, feat_dst)   # on the target grid, into the source
        flow_bwd = m.estimate(feat_dst, feat_src)   # on the source grid, into the target
        out: dict[str, Tensor] = {}
        loss = flow_fwd.new_zeros(())
        if self.lambda_sim:
            if self.perceptual:
                warped_src = m.encode(apply_warp(src, flow_fwd), c_src)   # source seen on the target grid
                warped_dst = m.encode(apply_warp(dst, flow_bwd), c_dst)
            else:
                warped_src = warp_features(feat_src, flow_fwd, layers)
                warped_dst = warp_features(feat_dst, flow_bwd, layers)
            sim = self._similarity(warped_src, feat_dst) + self._similarity(warped_dst, feat_src)
            loss = loss + self.lambda_sim * sim
            out["sim"] = sim.detach()
        if self.lambda_con:
            if self.recipe == "released":
                con = released_consistency_loss(flow_fwd, flow_bwd)
            else:
                con = 0.5 * (consistency_loss(flow_fwd, flow_bwd) + consistency_loss(flow_bwd, flow_fwd))
            loss = loss + self.lambda_con * con
            out["con"] = con.detach()
        if self.lambda_syn:
            if feat_aug is None:
                grid = self.augment.grid(len(src), src.shape[-1], src.device)
                with torch.no_grad():
                    feat_aug = m.encode(apply_warp(src, grid), c_src)
            else:
                grid = grid_src
            pred = m.estimate(feat_src, feat_aug)     # on the warped grid, into the source: the grid itself
            target = F.interpolate(grid.permute(0, 3, 1, 2), pred.shape[1:3], mode="bilinear",
                                   align_corners=True).permute(0, 2, 3, 1)
            syn = masked_mse(pred.float(), target)
            loss = loss + self.lambda_syn * syn
            out["syn"] = syn.detach()
        with torch.no_grad():   # their Delta_cross: how far the predicted flows are from the identity
            base = m.pos_map.permute(0, 2, 3, 1)
            out["delta"] = 0.5 * (masked_mse(flow_fwd.detach().float(), base.expand_as(flow_fwd))
                                  + masked_mse(flow_bwd.detach().float(), base.expand_as(flow_bwd)))
        out["loss"] = loss
        return out


# ---------------------------------------------------------------------------------------------
class _Dist:
    """Process-group facts (single process when not launched by torchrun)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            self.device = torch.device(f"cuda:{self.local_rank}") if use_cuda else torch.device("cpu")
        else:
            self.device = resolve_device(device_name)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world


class MetricsWriter:
    """Appends train/eval records to ``metrics.jsonl`` and ``train_log.csv`` / ``eval_log.csv``."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.jsonl = out_dir / "metrics.jsonl"

    def write(self, kind: str, record: dict) -> None:
        record = {"kind": kind, **record}
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        path = self.out_dir / f"{kind}_log.csv"
        fields = [k for k in record if k != "kind"]
        new = not path.exists()
        if not new:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
            fields = header + [k for k in fields if k not in header]
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(safe_row(fields))
            w.writerow(safe_row(record.get(k, "") for k in fields))

    def read(self, kind: str) -> list[dict]:
        if not self.jsonl.exists():
            return []
        with open(self.jsonl) as fh:
            return [r for r in (json.loads(line) for line in fh if line.strip()) if r.get("kind") == kind]


def plot_metrics(metrics: MetricsWriter, path: Path, title: str = "") -> Path | None:
    """Loss curves, held-out PCK (with the identity-flow level) and k-NN retrieval accuracy as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows, eval_rows = metrics.read("train"), metrics.read("eval")
    if not train_rows and not eval_rows:
        return None
    fig, (ax_loss, ax_pck, ax_knn) = plt.subplots(1, 3, figsize=(15, 4))
    keys = [k for k in ("loss", "sim", "con", "syn", "moco") if any(k in r for r in train_rows)]
    for k in keys:
        pts = [(r["step"], r[k]) for r in train_rows if k in r]
        ax_loss.plot(*zip(*pts), label=k)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    if keys and all(r[k] > 0 for r in train_rows for k in keys if k in r):
        ax_loss.set_yscale("log")
    if keys:
        ax_loss.legend()
    ax_loss.set_title("training losses")
    pck_rows = [r for r in eval_rows if "pck@0.10" in r]
    if pck_rows:
        steps = [r["step"] for r in pck_rows]
        for key, style in (("pck@0.10", "-o"), ("pck@0.05", "-s")):
            ax_pck.plot(steps, [r[key] for r in pck_rows], style, label=f"PSCNet {key}")
        ident = pck_rows[0].get("identity_pck@0.10")
        if ident is not None:
            ax_pck.axhline(ident, color="gray", ls="--", label="identity flow pck@0.10")
            ax_pck.axhline(pck_rows[0].get("identity_pck@0.05"), color="gray", ls=":", label="identity flow pck@0.05")
        ax_pck.legend()
    ax_pck.set_xlabel("optimizer step")
    ax_pck.set_ylabel("PCK on held-out pairs (%)")
    ax_pck.set_title("held-out PCK (psc6k.pck.evaluate)")
    knn_rows = [r for r in eval_rows if "knn_s2p" in r]
    if knn_rows:
        steps = [r["step"] for r in knn_rows]
        ax_knn.plot(steps, [100 * r["knn_s2p"] for r in knn_rows], "-o", label="sketch -> photo")
        ax_knn.plot(steps, [100 * r["knn_p2s"] for r in knn_rows], "-s", label="photo -> sketch")
        chance = knn_rows[0].get("knn_chance")
        if chance:
            ax_knn.axhline(100 * chance, color="gray", ls="--", label="chance")
        ax_knn.legend()
    ax_knn.set_xlabel("optimizer step")
    ax_knn.set_ylabel("top-1 accuracy (%)")
    ax_knn.set_title("k-NN retrieval on held-out pairs")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_heldout(model: PSCNet, ann, images: str, device, batch_size: int, image_size: int) -> dict:
    """PCK of ``model`` on annotation set ``ann`` (psc6k.pck.evaluate, no bootstrap)."""

    was_training = model.training
    sub = predict_submission(model, ann.photo, ann.sketch, images, device=device, batch_size=batch_size,
                             image_size=image_size, progress=False, method="PSCNet (training)")
    model.train(was_training)
    res = evaluate(ann, sub, n_bootstrap=0)
    return {k: round(v, 4) for k, v in res.overall.items()}


@torch.no_grad()
def pooled_features(model: PSCNet, photos, sketches, images: str, device, batch_size: int,
                    image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Globally pooled ``layer4`` features [N, C] of the photos (condition 0) and sketches (1), eval mode."""
    was_training = model.training
    model.eval()
    loader = DataLoader(PairDataset(photos, sketches, images, image_size), batch_size=batch_size, shuffle=False)
    fp, fs = [], []
    try:
        for _, photo, sketch in loader:
            fp.append(model.encoder_q.pooled(model.normalize(photo.to(device)), PHOTO)[0].float().cpu().numpy())
            fs.append(model.encoder_q.pooled(model.normalize(sketch.to(device)), SKETCH)[0].float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(fp), np.concatenate(fs)


def knn_accuracy(photo_feats: np.ndarray, sketch_feats: np.ndarray, photos, sketches) -> dict:
    """Top-1 nearest-neighbour retrieval accuracy between the two modalities of N pairs.

    As the authors' ``eval_knn`` (``trainer.py``): Euclidean nearest neighbour
    (``sklearn.neighbors.NearestNeighbors``) of the pooled encoder features. Sketch -> photo: each
    pair's sketch queries the photos of all pairs; correct when the retrieved photo is the
    pair's photo (the same file: a photo that appears in several pairs is one right answer, not
    several wrong ones). Photo -> sketch likewise. ``knn_chance``: the accuracy of a random pick.
    """
    from sklearn.neighbors import NearestNeighbors

    photos, sketches = np.asarray(photos), np.asarray(sketches)
    nn_p = NearestNeighbors(n_neighbors=1).fit(photo_feats)
    hit_s2p = photos[nn_p.kneighbors(sketch_feats, 1, return_distance=False)[:, 0]] == photos
    nn_s = NearestNeighbors(n_neighbors=1).fit(sketch_feats)
    hit_p2s = sketches[nn_s.kneighbors(photo_feats, 1, return_distance=False)[:, 0]] == sketches
    _, counts = np.unique(photos, return_counts=True)
    return {"knn_s2p": round(float(hit_s2p.mean()), 4), "knn_p2s": round(float(hit_p2s.mean()), 4),
            "knn_chance": round(float((counts ** 2).sum() / len(photos) ** 2), 4)}


def identity_pck(ann) -> dict:
    ident = identity_flow(len(ann))
    sub = Submission("identity", "flow", list(ann.photo), list(ann.sketch), ident, ident.copy())
    return {f"identity_{k}": round(v, 4) for k, v in evaluate(ann, sub, n_bootstrap=0).overall.items()}


def holdout_split(pairs, n: int, seed: int) -> dict:
    """Categories left out of training (paper Appendix C): ``n`` of the training pairs' categories
    drawn with ``numpy.random.default_rng(seed)``; returns ``{"held_out": [...], "train": [...]}``."""
    present = sorted({pairs.categories[int(c) - 1] for c in np.asarray(pairs.cls)})
    if n >= len(present):
        raise Psc6kError(f"`holdout_categories` {n} leaves no training category (the pairs have {len(present)})")
    held = sorted(np.random.default_rng(seed).choice(present, size=n, replace=False).tolist())
    return {"held_out": held, "train": [c for c in present if c not in held], "seed": seed, "n": n}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_training_model(cfg: TrainConfig) -> tuple[PSCNet, dict | None]:
    """The model to train: from ``resume`` (its own config), else ``init`` weights, else random
    (with ``init_encoder`` ResNet weights in the encoders); BatchNorm shared per the recipe."""
    source = cfg.resume or cfg.init
    if source:
        ckpt = read_checkpoint(source)
        model = PSCNet(model_config(cfg, infer_config(ckpt)))
        load_state_dict_strict(model, ckpt["state_dict"], where=source)
    else:
        ckpt = None
        try:
            model = PSCNet(model_config(cfg))
        except (TypeError, ValueError) as exc:
            raise Psc6kError(f"bad model configuration {cfg.model}: {exc}") from None
        if cfg.init_encoder:
            load_encoder_init(model, cfg.init_encoder)
    if cfg.shared_bn:
        # the two copies of a released checkpoint are identical; of a paper-recipe one they may
        # differ, and the shared module keeps the photo copy (condition 0)
        share_batchnorm(model.encoder_q)
        share_batchnorm(model.encoder_k)
    return model, ckpt if cfg.resume else None


def train(cfg: TrainConfig) -> dict:
    """Run one training job; returns the last metrics (and the checkpoint path) as a dict."""

    env = _Dist(cfg.device)
    device = env.device
    _seed_everything(cfg.seed + env.rank)
    if not cfg.out_dir:
        raise Psc6kError("`out_dir` is required")
    out_dir = Path(cfg.out_dir)
    if env.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model, resume_ckpt = build_training_model(cfg)
    model.to(device).train()
    last_ckpt = out_dir / "checkpoint_last.pth.tar"
    config_record = resolved_config(cfg, model.config)
    if cfg.max_steps == 0:   # the initial weights only (e.g. after --init-encoder)
        if env.main:
            save_checkpoint(last_ckpt, model, train_config=config_record, epoch=0, step=0)
        return {"step": 0, "epoch": 0, "checkpoint": str(last_ckpt), "seconds": 0.0}
    if not cfg.images or not cfg.train_pairs:
        raise Psc6kError("`images` and `train_pairs` are required to train")

    pairs = read_train_pairs(cfg.train_pairs)
    val_ann = None
    if cfg.val_annotations:
        val_ann = read_annotations(cfg.val_annotations)
        if cfg.val_pairs and len(val_ann) > cfg.val_pairs:
            val_ann = val_ann.subset(np.arange(cfg.val_pairs))
    if cfg.holdout_categories:
        split = holdout_split(pairs, cfg.holdout_categories, cfg.holdout_seed)
        keep = [pairs.categories[int(c) - 1] not in split["held_out"] for c in np.asarray(pairs.cls)]
        pairs = dataclasses.replace(pairs, photo=[p for p, k in zip(pairs.photo, keep) if k],
                                    sketch=[s for s, k in zip(pairs.sketch, keep) if k],
                                    cls=np.asarray(pairs.cls)[np.asarray(keep)])
        if env.main:
            (out_dir / "holdout_split.json").write_text(json.dumps(split, indent=1) + "\n")
    dataset = PhotoEpochDataset(pairs, cfg.images, cfg.image_size, mix_within_class=cfg.supervision == "class")
    # fail on a missing or unreadable image now, not after an hour of training
    dataset.check_files()
    dataset[0]

    use_amp = cfg.amp and device.type == "cuda"
    common = dict(trans_type=cfg.trans_type, jitter_p=cfg.jitter_p)
    if cfg.task == "encoder":
        objective: nn.Module = EncoderObjective(model, cfg.warp_strength, supervision=cfg.supervision,
                                                clr_loss_weight=cfg.clr_loss_weight, recipe=cfg.recipe, **common)
        params = model.encoder_parameters()
    else:
        objective = EstimatorObjective(model, cfg.corr_t, cfg.sim_loss_weight, cfg.con_loss_weight,
                                       cfg.syn_loss_weight, cfg.warp_strength, recipe=cfg.recipe,
                                       weighted=cfg.weighted, perceptual=cfg.perceptual, **common)
        params = list(model.stn.parameters())
        if cfg.freeze:
            for p in model.framework.parameters():
                p.requires_grad_(False)
        else:
            params += list(model.encoder_q.parameters())
    if env.world > 1 and device.type == "cuda":
        model.stn = nn.SyncBatchNorm.convert_sync_batchnorm(model.stn)
        objective.model = model
    optimizer = torch.optim.SGD([p for p in params if p.requires_grad], lr=cfg.learning_rate,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    runner: nn.Module = objective
    if env.world > 1:
        runner = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    if cfg.batch_size % (env.world * cfg.accumulate):
        raise Psc6kError(f"`batch_size` {cfg.batch_size} is not divisible by {env.world} processes x "
                         f"`accumulate` {cfg.accumulate}")
    per_process = cfg.batch_size // env.world
    sampler = (DistributedSampler(dataset, env.world, env.rank, shuffle=True, seed=cfg.seed, drop_last=True)
               if env.world > 1 else RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed)))
    loader = DataLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)
    if len(loader) == 0:
        raise Psc6kError(f"{len(dataset)} training photos is fewer than one batch of {per_process} per process"
                         f" (an epoch visits every photo once); lower `batch_size`")
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs_run
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    start_epoch, step = 0, 0
    if resume_ckpt is not None:
        try:
            optimizer.load_state_dict(resume_ckpt["optimizer"])
            if "scaler" in resume_ckpt and use_amp:
                scaler.load_state_dict(resume_ckpt["scaler"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{cfg.resume}: cannot resume the optimizer state ({exc}); "
                                  f"use `init` to start a new run from its weights") from None
        start_epoch, step = int(resume_ckpt.get("epoch", 0)), int(resume_ckpt.get("step", 0))

    metrics = MetricsWriter(out_dir)
    if env.main:
        (out_dir / "config.json").write_text(json.dumps(config_record, indent=1) + "\n")
    baseline = identity_pck(val_ann) if (val_ann is not None and env.main) else {}
    last: dict = {}
    title = f"PSCNet {cfg.task} ({model.config.arch}, recipe {cfg.recipe})"

    def do_eval(epoch: int, pck: bool, knn: bool) -> None:
        nonlocal last
        if val_ann is None or not env.main or not (pck or knn):
            return
        record = {"epoch": epoch, "step": step}
        if knn:
            fp, fs = pooled_features(model, val_ann.photo, val_ann.sketch, cfg.images, device,
                                     max(per_process // cfg.accumulate, 8), cfg.image_size)
            record.update(knn_accuracy(fp, fs, val_ann.photo, val_ann.sketch))
        if pck:
            record.update(evaluate_heldout(model, val_ann, cfg.images, device, max(per_process // cfg.accumulate, 8),
                                           cfg.image_size))
            record.update(baseline)
        last = {**last, **record}
        metrics.write("eval", record)
        plot_metrics(metrics, out_dir / "learning_curve.png", title)

    if env.main and step == 0 and val_ann is not None:
        do_eval(0, pck=True, knn=True)
    bar = tqdm(total=total_steps, initial=step, unit="step", desc=f"train {cfg.task}",
               disable=not (cfg.progress and env.main))
    sums: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    done = step >= total_steps
    epoch = start_epoch
    is_encoder = cfg.task == "encoder"
    while not done and epoch < cfg.epochs_run:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        lr = lr_at_epoch(epoch, cfg.epochs_run, cfg.learning_rate, cfg.warmup_epochs, cfg.cos)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = iter(loader)
        batch_in_epoch = 0
        while True:
            try:
                photo, sketch = next(batches)
            except StopIteration:
                break
            except ImageError as exc:
                raise unwrap_worker_error(exc) from None
            photo, sketch = photo.to(device, non_blocking=True), sketch.to(device, non_blocking=True)
            losses = accumulated_step(runner, optimizer, scaler, photo, sketch,
                                      role_index(cfg.recipe, batch_in_epoch, step), cfg.accumulate,
                                      use_amp=use_amp, moco=model.framework if is_encoder else None)
            step += 1
            batch_in_epoch += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4g}", lr=f"{lr:.2g}")
            if step % cfg.log_every == 0 or step == total_steps:
                record = {"epoch": epoch, "step": step, "lr": lr,
                          **{k: env.mean(v / count) for k, v in sums.items()},
                          "seconds": round(time.perf_counter() - t0, 2)}
                if env.main:
                    metrics.write("train", record)
                sums, count = {}, 0
            if step >= total_steps or (cfg.time_limit and env.mean(time.perf_counter() - t0) > cfg.time_limit):
                done = True
                break
        epoch += 1
        do_eval(epoch, pck=done or epoch % cfg.pck_freq == 0, knn=done or epoch % cfg.knn_freq == 0)
        if env.main and (done or epoch % cfg.save_freq == 0 or epoch == cfg.epochs_run):
            save_checkpoint(last_ckpt, model, train_config=config_record, epoch=epoch, step=step,
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
    bar.close()
    if env.main:
        if not last_ckpt.exists() or step == 0:
            save_checkpoint(last_ckpt, model, train_config=config_record, epoch=epoch, step=step,
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
        plot_metrics(metrics, out_dir / "learning_curve.png", title)
    if env.world > 1:
        dist.barrier()
    return {**last, "step": step, "epoch": epoch, "checkpoint": str(last_ckpt),
            "seconds": round(time.perf_counter() - t0, 2)}


def accumulated_step(runner: nn.Module, optimizer, scaler, photo: Tensor, sketch: Tensor, role: int,
                     accumulate: int = 1, *, use_amp: bool = False, moco=None) -> dict[str, float]:
    """One optimizer step over a batch split into ``accumulate`` equal micro-batches.

    Each micro-batch loss is divided by ``accumulate`` before ``backward``, so the summed
    gradient is that of the batch mean. For MoCo (``moco`` given) the key encoder moves once (on
    the first micro-batch) and every micro-batch's keys enter the queue after the last one, so
    each query sees the negatives of one large batch. ``role`` picks the modalities'
    roles (:func:`role_index`). Returns the mean losses (floats).
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    keys = []
    for j, (p, s) in enumerate(zip(photo.chunk(accumulate), sketch.chunk(accumulate))):
        ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        with ctx:
            losses = runner(p, s, role, first=j == 0, enqueue=moco is None)
        scaler.scale(losses["loss"] / accumulate).backward()
        if "keys" in losses:
            keys.append(losses.pop("keys"))
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / accumulate
    if moco is not None and keys:
        moco.enqueue(torch.cat(keys))
    scaler.step(optimizer)
    scaler.update()
    return sums
