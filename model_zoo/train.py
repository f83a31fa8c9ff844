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

from model_zoo.augment import apply_warp, color_augmentation, random_affine_tps_grid
from model_zoo.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint, infer_config
from model_zoo.data import ImageError, TrainPairDataset, unwrap_worker_error
from model_zoo.losses import consistency_loss, similarity_loss
from model_zoo.pscnet import PHOTO, SKETCH, PSCNet, PSCNetConfig
from model_zoo.predict import predict_submission, resolve_device
from psc6k.errors import Psc6kError

__all__ = ["TrainConfig", "EncoderObjective", "EstimatorObjective", "train", "lr_at"]

TASKS = ("encoder", "estimator")
DEFAULT_LR = {"encoder": 0.03, "estimator": 0.003}


@dataclasses.dataclass
class TrainConfig:
    """One training run. Paths are strings so that the config is stored in checkpoints as JSON."""

    task: str
    images: str
    train_pairs: str
    out_dir: str
    val_annotations: str | None = None
    val_pairs: int = 200
    model: dict = dataclasses.field(default_factory=dict)   # PSCNetConfig overrides
    init: str | None = None        # start from these weights (e.g. the encoder run's checkpoint)
    resume: str | None = None      # continue this run (weights + optimizer + epoch)
    epochs: int = 100
    max_steps: int | None = None   # stop early after this many optimizer steps (smoke runs, benchmarks)
    time_limit: float | None = None  # stop (evaluate, save) after this many seconds of training
    batch_size: int = 32
    lr: float | None = None        # default: 0.03 encoder, 0.003 estimator
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    tau: float = 0.001
    lambda_sim: float = 0.1
    lambda_con: float = 1.0
    lambda_syn: float = 0.0        # optional self-supervised synthetic-warp loss (released code, off)
    freeze_encoder: bool = False
    image_size: int = 256
    amp: bool = True
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    eval_every: int = 1            # epochs
    save_every: int = 1            # epochs
    log_every: int = 10            # steps
    progress: bool = True
    warp_strength: float = 1.0     # scales the random affine+TPS warps (1 = paper-like)

    def __post_init__(self):
        if self.task not in TASKS:
            raise Psc6kError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.batch_size < 2:
            raise Psc6kError("--batch-size must be >= 2 (BatchNorm needs a batch)")
        if self.epochs < 1:
            raise Psc6kError("--epochs must be >= 1")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.task]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up then half-cycle cosine decay to 0 over ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _conditions(step: int) -> tuple[int, int]:
    """Alternate which modality is the source/query: even steps photo -> sketch, odd the reverse."""
    return (PHOTO, SKETCH) if step % 2 == 0 else (SKETCH, PHOTO)


class EncoderObjective(nn.Module):
    """MoCo v2 loss of one batch of photo-sketch pairs (query and key from the two modalities)."""

    def __init__(self, model: PSCNet, warp_strength: float = 1.0):
        super().__init__()
        self.model = model
        self.color = color_augmentation()
        self.warp_strength = warp_strength

    def _augment(self, images: Tensor) -> Tensor:
        grid = _random_grid(len(images), images.shape[-1], self.warp_strength, images.device)
        return self.model.normalize(apply_warp(self.color(images), grid))

    def forward(self, photo: Tensor, sketch: Tensor, step: int) -> dict[str, Tensor]:
        c_q, c_k = _conditions(step)
        im_q, im_k = (photo, sketch) if c_q == PHOTO else (sketch, photo)
        logits, labels = self.model.framework(self._augment(im_q), self._augment(im_k), c_q, c_k)
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "moco": loss.detach(), "acc1": acc.detach()}


def _random_grid(n: int, size: int, strength: float, device) -> Tensor:
    return random_affine_tps_grid(n, size, max_rotation=strength * math.pi / 8,
                                  scale=(1 - 0.25 * strength, 1 + 0.25 * strength),
                                  max_translation=0.25 * strength, tps_jitter=0.125 * strength, device=device)


class EstimatorObjective(nn.Module):
    """Warp-estimator losses of one batch (SPEC §6).

    The source image (colour-augmented) and the target image (colour-augmented and randomly
    warped) are encoded; the STN predicts the flows both ways; each image is warped onto the
    other's grid with the predicted flow, encoded again and compared with the other's features
    (weighted perceptual similarity, softmax temperature ``tau``); the two flows must invert each
    other (consistency). Optionally (``lambda_syn`` > 0) the STN also regresses a known random
    warp of the source onto itself.
    """

    def __init__(self, model: PSCNet, tau: float = 0.001, lambda_sim: float = 0.1, lambda_con: float = 1.0,
                 lambda_syn: float = 0.0, warp_strength: float = 1.0):
        super().__init__()
        self.model = model
        self.color = color_augmentation()
        self.tau, self.lambda_sim, self.lambda_con, self.lambda_syn = tau, lambda_sim, lambda_con, lambda_syn
        self.warp_strength = warp_strength

    def forward(self, photo: Tensor, sketch: Tensor, step: int) -> dict[str, Tensor]:
        m = self.model
        c_src, c_dst = _conditions(step)
        src, dst = (photo, sketch) if c_src == PHOTO else (sketch, photo)
        size = src.shape[-1]
        src = self.color(src)
        dst = apply_warp(self.color(dst), _random_grid(len(dst), size, self.warp_strength, dst.device))
        layers = m.config.corr_layers
        with torch.no_grad():
            feat_src = m.encode(src, c_src)
            feat_dst = m.encode(dst, c_dst)
        flow_fwd = m.estimate(feat_src, feat_dst)   # on the target grid, into the source
        flow_bwd = m.estimate(feat_dst, feat_src)   # on the source grid, into the target
        out: dict[str, Tensor] = {}
        loss = flow_fwd.new_zeros(())
        if self.lambda_sim:
            warped_src = apply_warp(src, flow_fwd)   # source seen on the target grid
            warped_dst = apply_warp(dst, flow_bwd)
            sim = (similarity_loss(m.encode(warped_src, c_src), feat_dst, layers, m.config.flow_size, self.tau)
                   + similarity_loss(m.encode(warped_dst, c_dst), feat_src, layers, m.config.flow_size, self.tau))
            loss = loss + self.lambda_sim * sim
            out["sim"] = sim.detach()
        if self.lambda_con:
            con = 0.5 * (consistency_loss(flow_fwd, flow_bwd) + consistency_loss(flow_bwd, flow_fwd))
            loss = loss + self.lambda_con * con
            out["con"] = con.detach()
        if self.lambda_syn:
            grid = _random_grid(len(src), size, self.warp_strength, src.device)
            with torch.no_grad():
                feat_aug = m.encode(apply_warp(src, grid), c_src)
            pred = m.estimate(feat_src, feat_aug)     # on the warped grid, into the source: the grid itself
            target = F.interpolate(grid.permute(0, 3, 1, 2), pred.shape[1:3], mode="bilinear",
                                   align_corners=True).permute(0, 2, 3, 1)
            inside = (target.abs() <= 1).all(-1)
            syn = ((pred.float() - target) ** 2).sum(-1)[inside].mean() if bool(inside.any()) else pred.sum() * 0
            loss = loss + self.lambda_syn * syn
            out["syn"] = syn.detach()
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
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: record.get(k, "") for k in fields})

    def read(self, kind: str) -> list[dict]:
        if not self.jsonl.exists():
            return []
        with open(self.jsonl) as fh:
            return [r for r in (json.loads(line) for line in fh if line.strip()) if r.get("kind") == kind]


def plot_metrics(metrics: MetricsWriter, path: Path, title: str = "") -> Path | None:
    """Loss curves (left) and held-out PCK with the identity-flow level (right) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows, eval_rows = metrics.read("train"), metrics.read("eval")
    if not train_rows and not eval_rows:
        return None
    fig, (ax_loss, ax_pck) = plt.subplots(1, 2, figsize=(11, 4))
    keys = [k for k in ("loss", "sim", "con", "syn", "moco") if any(k in r for r in train_rows)]
    for k in keys:
        pts = [(r["step"], r[k]) for r in train_rows if k in r]
        ax_loss.plot(*zip(*pts), label=k)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    if keys and all(v > 0 for r in train_rows for k in keys if k in r for v in [r[k]]):
        ax_loss.set_yscale("log")
    if keys:
        ax_loss.legend()
    ax_loss.set_title("training losses")
    if eval_rows:
        steps = [r["step"] for r in eval_rows]
        for key, style in (("pck@0.10", "-o"), ("pck@0.05", "-s")):
            ax_pck.plot(steps, [r[key] for r in eval_rows], style, label=f"PSCNet {key}")
        ident = eval_rows[0].get("identity_pck@0.10")
        if ident is not None:
            ax_pck.axhline(ident, color="gray", ls="--", label="identity flow pck@0.10")
            ax_pck.axhline(eval_rows[0].get("identity_pck@0.05"), color="gray", ls=":", label="identity flow pck@0.05")
        ax_pck.set_xlabel("step")
        ax_pck.set_ylabel("PCK on held-out pairs (%)")
        ax_pck.legend()
        ax_pck.set_title("held-out PCK (psc6k.pck.evaluate)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_heldout(model: PSCNet, ann, images: str, device, batch_size: int, image_size: int) -> dict:
    """PCK of ``model`` on annotation set ``ann`` (psc6k.pck.evaluate, no bootstrap)."""
    from psc6k.pck import evaluate

    was_training = model.training
    sub = predict_submission(model, ann.photo, ann.sketch, images, device=device, batch_size=batch_size,
                             image_size=image_size, progress=False, method="PSCNet (training)")
    model.train(was_training)
    res = evaluate(ann, sub, n_bootstrap=0)
    return {k: round(v, 4) for k, v in res.overall.items()}


def identity_pck(ann) -> dict:
    from psc6k.pck import evaluate
    from psc6k.submission import Submission, identity_flow

    ident = identity_flow(len(ann))
    sub = Submission("identity", "flow", list(ann.photo), list(ann.sketch), ident, ident.copy())
    return {f"identity_{k}": round(v, 4) for k, v in evaluate(ann, sub, n_bootstrap=0).overall.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_training_model(cfg: TrainConfig) -> tuple[PSCNet, dict | None]:
    """The model to train: from ``resume`` (its own config), else ``init`` weights, else random."""
    source = cfg.resume or cfg.init
    if source:
        ckpt = read_checkpoint(source)
        config = infer_config(ckpt)
        if cfg.model:
            config = dataclasses.replace(config, **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in cfg.model.items()})
        model = PSCNet(config)
        load_state_dict_strict(model, ckpt["state_dict"], where=source)
        return model, ckpt if cfg.resume else None
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()}
    try:
        return PSCNet(PSCNetConfig(**overrides)), None
    except (TypeError, ValueError) as exc:
        raise Psc6kError(f"bad model configuration {cfg.model}: {exc}") from None


def train(cfg: TrainConfig) -> dict:
    """Run one training job; returns the last metrics (and the checkpoint path) as a dict."""
    from psc6k.formats import read_annotations, read_train_pairs

    env = _Dist(cfg.device)
    device = env.device
    _seed_everything(cfg.seed + env.rank)
    out_dir = Path(cfg.out_dir)
    if env.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    pairs = read_train_pairs(cfg.train_pairs)
    dataset = TrainPairDataset(pairs, cfg.images, cfg.image_size)
    # fail on a missing or unreadable image now, not after an hour of training
    dataset.check_files()
    dataset[0]
    val_ann = None
    if cfg.val_annotations:
        val_ann = read_annotations(cfg.val_annotations)
        if cfg.val_pairs and len(val_ann) > cfg.val_pairs:
            val_ann = val_ann.subset(np.arange(cfg.val_pairs))

    model, resume_ckpt = build_training_model(cfg)
    model.to(device).train()
    use_amp = cfg.amp and device.type == "cuda"
    if cfg.task == "encoder":
        objective = EncoderObjective(model, cfg.warp_strength)
        params = model.encoder_parameters()
    else:
        objective = EstimatorObjective(model, cfg.tau, cfg.lambda_sim, cfg.lambda_con, cfg.lambda_syn,
                                       cfg.warp_strength)
        params = list(model.stn.parameters())
        if cfg.freeze_encoder:
            for p in model.encoder_q.parameters():
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

    sampler = (DistributedSampler(dataset, env.world, env.rank, shuffle=True, seed=cfg.seed, drop_last=True)
               if env.world > 1 else RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed)))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)
    if len(loader) == 0:
        raise Psc6kError(f"{len(dataset)} training images (with flips) is fewer than one batch of {cfg.batch_size}"
                         f" per process; lower --batch-size")
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    start_epoch, step = 0, 0
    if resume_ckpt is not None:
        try:
            optimizer.load_state_dict(resume_ckpt["optimizer"])
            if "scaler" in resume_ckpt and use_amp:
                scaler.load_state_dict(resume_ckpt["scaler"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{cfg.resume}: cannot resume the optimizer state ({exc}); "
                                  f"use --init to start a new run from its weights") from None
        start_epoch, step = int(resume_ckpt.get("epoch", 0)), int(resume_ckpt.get("step", 0))

    metrics = MetricsWriter(out_dir)
    baseline = identity_pck(val_ann) if (val_ann is not None and env.main) else {}
    last: dict = {}
    last_ckpt = out_dir / "checkpoint_last.pth.tar"

    def do_eval(epoch: int) -> None:
        nonlocal last
        if val_ann is None or not env.main:
            return
        scores = evaluate_heldout(model, val_ann, cfg.images, device, max(cfg.batch_size, 8), cfg.image_size)
        last = {"epoch": epoch, "step": step, **scores, **baseline}
        metrics.write("eval", last)
        plot_metrics(metrics, out_dir / "learning_curve.png", f"PSCNet {cfg.task} ({model.config.arch})")

    if env.main and step == 0 and val_ann is not None:
        do_eval(0)
    bar = tqdm(total=total_steps, initial=step, unit="step", desc=f"train {cfg.task}",
               disable=not (cfg.progress and env.main))
    sums: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    done = step >= total_steps
    epoch = start_epoch
    while not done and epoch < cfg.epochs:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        batches = iter(loader)
        while True:
            try:
                photo, sketch = next(batches)
            except StopIteration:
                break
            except ImageError as exc:
                raise unwrap_worker_error(exc) from None
            lr = lr_at(step, total_steps, cfg.learning_rate, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            photo, sketch = photo.to(device, non_blocking=True), sketch.to(device, non_blocking=True)
            ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
            with ctx:
                losses = runner(photo, sketch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.4g}", lr=f"{lr:.2g}")
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
        if done or epoch % cfg.eval_every == 0:
            do_eval(epoch)
        if env.main and (done or epoch % cfg.save_every == 0 or epoch == cfg.epochs):
            save_checkpoint(last_ckpt, model, train_config=cfg.to_dict(), epoch=epoch, step=step,
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
    bar.close()
    if env.main:
        if not last_ckpt.exists() or step == 0:
            save_checkpoint(last_ckpt, model, train_config=cfg.to_dict(), epoch=epoch, step=step,
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
        plot_metrics(metrics, out_dir / "learning_curve.png", f"PSCNet {cfg.task} ({model.config.arch})")
    if env.world > 1:
        dist.barrier()
    return {**last, "step": step, "epoch": epoch, "checkpoint": str(last_ckpt),
            "seconds": round(time.perf_counter() - t0, 2)}
