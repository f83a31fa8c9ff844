"""psc6k's training step (``--recipe released``) against the authors' ``trainer.py``, side by side.

Both trainers take two encoder (MoCo) steps and two estimator steps on identical inputs: the same
random weights in the released layout (psc6k's initialisation, loaded into both), the same batch,
the same warp grids (drawn once from *their* generator, ``SynthecticAffHomoTPSTransfo``, seeded),
colour augmentation off (their ``color_aug`` reduced to its ``Normalize``; psc6k normalises inside
the model), CPU, float32, ResNet-18 at 128 px. Printed per step, each with its difference: the
losses, the gradient (L2 over all trainable tensors), the SGD update with momentum and weight
decay (parameters after the step, momentum buffers; for MoCo the key encoder and the queue), the
BatchNorm running statistics (max relative difference; passes counted), the roles; then the
learning rate of every epoch of a default run (1,500 epochs).

Nothing of theirs is copied here: their modules are imported from ``--authors DIR`` at run time.
What this script shims, only in this process: ``Tensor.cuda`` and ``Tensor.half`` are the identity
(their trainer moves tensors to the GPU and casts the warped images to half for AMP; on CPU AMP
is off), a one-process gloo group stands in for their NCCL group (their MoCo gathers and
broadcasts), their model is held as ``.module`` without DDP (their trainer never calls the DDP
forward), kornia's colour jitter / grayscale / blur are replaced by the identity, ``seaborn`` and
``torch.utils.tensorboard`` (visualisation and logging only) are stubs, and ``datasets`` is a stub
(only ``adjust_learning_rate`` is taken from ``train_psc.py``).

Usage::

    git clone https://github.com/cogtoolslab/photo-sketch-correspondence /tmp/authors
    python benchmarks/bench_train_step.py --authors /tmp/authors [--batch 8] [--size 128] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_zoo.pscnet import PSCNet  # noqa: E402
from model_zoo.resnet_cbn import share_batchnorm  # noqa: E402
from model_zoo.testing import NoScaler  # noqa: E402
from model_zoo.train import (EncoderObjective, EstimatorObjective, TrainConfig, _conditions,  # noqa: E402
                             accumulated_step, lr_at_epoch, role_index)

HOW_TO_GET = """bench_train_step.py compares psc6k's training step with the authors' trainer.py and needs
a checkout of their repository (nothing of theirs is in psc6k):

    git clone https://github.com/cogtoolslab/photo-sketch-correspondence /tmp/authors
    python benchmarks/bench_train_step.py --authors /tmp/authors

Their code needs kornia, scikit-learn, opencv-python and matplotlib (seaborn, tensorboard and
torchvision are stubbed by this script)."""

ROLE = {0: "photo -> sketch", 1: "sketch -> photo"}


# ------------------------------------------------------------------ their code, shimmed
def _stub(name: str, **attrs) -> None:
    if name in sys.modules:
        return
    try:
        __import__(name)
        return
    except ImportError:
        pass
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod


def import_authors(root: Path) -> dict:
    """Their modules, imported from ``root`` (their repository) with the stubs above."""
    root = root.resolve()
    for f in ("trainer.py", "train_psc.py", "models/PSCNet.py", "models/moco.py", "models/resnet_cbn.py",
              "utils/spatial_transforms.py"):
        if not (root / f).is_file():
            raise SystemExit(f"--authors {root}: {f} not found; is this a checkout of "
                             f"cogtoolslab/photo-sketch-correspondence?\n\n{HOW_TO_GET}")
    sys.path.insert(0, str(root))
    _stub("seaborn")

    class _Writer:
        def __init__(self, *a, **k):
            pass

    _stub("torch.utils.tensorboard", SummaryWriter=_Writer)
    # train_psc.py imports its data modules at the top; only adjust_learning_rate is used here
    for name in ("datasets", "datasets.photo_sketch_dataset", "datasets.dataset"):
        mod = types.ModuleType(name)
        mod.PhotoSketchDataset = mod.MultiEpochsDataLoader = None
        sys.modules[name] = mod
    import models.moco as moco
    import models.resnet_cbn as resnet_cbn
    import train_psc
    import trainer
    from models.PSCNet import PSCNet as TheirPSCNet
    from utils.spatial_transforms import SynthecticAffHomoTPSTransfo
    return dict(trainer=trainer, train_psc=train_psc, moco=moco, resnet_cbn=resnet_cbn, PSCNet=TheirPSCNet,
                Synth=SynthecticAffHomoTPSTransfo)


@contextlib.contextmanager
def cpu_shims():
    """``Tensor.cuda`` / ``Tensor.half`` as the identity while their code runs (CPU, float32)."""
    saved = torch.Tensor.cuda, torch.Tensor.half
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.half = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.half = saved


def one_process_group(tmp: str) -> None:
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)


class _Holder(nn.Module):
    """Their trainer calls ``model.module.*`` (DDP's wrapped module) and ``model.train()``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


# ------------------------------------------------------------------ instrumentation
class Recorder(NoScaler):
    """Losses (via the scaler), gradients and momentum buffers around ``optimizer.step``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.steps: list[dict] = []
        self._loss = None
        inner = optimizer.step

        def step(*a, **k):
            names = dict(_named_parameters(model))
            grads = {n: p.grad.detach().clone() for n, p in names.items() if p.grad is not None}
            out = inner(*a, **k)
            momentum = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in names.items()
                        if p in optimizer.state and optimizer.state[p].get("momentum_buffer") is not None}
            self.steps.append({"loss": self._loss, "grads": grads, "momentum": momentum})
            return out

        optimizer.step = step

    def scale(self, loss):   # the scaler their trainer and psc6k's accumulated_step call
        self._loss = float(loss.detach())
        return loss


class _Writer:
    """Their ``AverageMeter.log`` targets: the per-step loss terms."""

    def __init__(self):
        self.scalars: dict[tuple[str, int], float] = {}

    def add_scalar(self, name, value, n):
        self.scalars[(name, int(n))] = float(value)


def _named_parameters(model: nn.Module):
    return [(n.replace("module.", ""), p) for n, p in model.named_parameters()]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by released key (shared modules listed once per name)."""
    return {k.replace("module.", ""): v.detach().clone() for k, v in model.state_dict().items()}


def _rel(a: dict, b: dict, keys) -> float:
    """||a - b|| / ||b|| over the tensors ``keys`` (L2 over all of them together)."""
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((b[k].double() ** 2).sum()) for k in keys)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def _l2(d: dict, keys) -> float:
    return math.sqrt(sum(float((d[k].double() ** 2).sum()) for k in keys))


def _bn_max_rel(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in b:
        if k.endswith(("running_mean", "running_var")):
            d = float((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max().clamp_min(1e-12))
            if d > worst:
                worst, where = d, k
    return worst, where


# ------------------------------------------------------------------ the two runs
def their_steps(A, state, batches, grids, task: str, lr: float, batch: int):
    """Their ``train()`` over ``batches`` (one epoch, so batch index i = 0, 1)."""
    trainer = A["trainer"]
    model = A["PSCNet"](A["moco"].MoCo, A["resnet_cbn"].resnet18, dim=128, K=8192, m=0.999, T=0.07,
                        corr_layer=[2, 3], pretrained_encoder="", replace_stride_with_dilation=[False, False, False],
                        feat_size=16, stn_size=16, stn_layer=5)
    model.load_state_dict(state, strict=True)
    holder = _Holder(model)
    feed = iter([g[j:j + 1].clone() for g in grids for j in range(len(g))])

    class Feed:
        def __init__(self, *a, **k):
            pass

        def __call__(self):
            return next(feed)

    class NoColour(nn.Identity):
        def __init__(self, *a, **k):
            super().__init__()

    import kornia.augmentation as kaug
    trainer.SynthecticAffHomoTPSTransfo = Feed
    trainer.aug = types.SimpleNamespace(ColorJitter=NoColour, RandomGrayscale=NoColour,
                                        RandomGaussianBlur=NoColour, Normalize=kaug.Normalize)
    roles = []
    fb, ff = model.forward_backbone, model.forward_framework

    def forward_backbone(im, cond, corr_only=False):
        roles.append(("backbone", cond))
        return fb(im, cond, corr_only=corr_only)

    def forward_framework(im_q, im_k, cond_q, cond_k):
        roles.append(("framework", cond_q))
        return ff(im_q=im_q, im_k=im_k, cond_q=cond_q, cond_k=cond_k)

    model.forward_backbone, model.forward_framework = forward_backbone, forward_framework
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
    rec = Recorder(holder, optimizer)
    writer = _Writer()
    args = types.SimpleNamespace(task=task, supervision="pair", clr_loss_weight=1.0, sim_loss_weight=0.1,
                                 con_loss_weight=1.0, syn_loss_weight=0.0, freeze=True, weighted=True,
                                 perceptual=True, corr_t=0.001, gpu=None, stn_size=16, batch_size=batch,
                                 print_freq=10 ** 9, trans_type=["affine", "tps", "afftps"])
    snapshots: list[dict] = []

    class Loader:   # their train() takes len() and enumerates; the state is kept before each batch
        def __len__(self):
            return len(batches)

        def __iter__(self):
            for data in batches:
                snapshots.append(_state(holder))
                yield data
            snapshots.append(_state(holder))

    criterion = {"ce": nn.CrossEntropyLoss(), "ce_none": nn.CrossEntropyLoss(reduction="none"),
                 "mask_mse": sys.modules["utils.losses"].MaskMSE()}
    trainer.train(Loader(), holder, criterion, optimizer, rec, 0, args, writer)
    first = "framework" if task == "encoder" else "backbone"
    per_step = sum(1 for kind, _ in roles if kind == first) // len(batches)
    firsts = [c for kind, c in roles if kind == first][::per_step]
    for k, s in enumerate(rec.steps):
        if task == "encoder":
            s["terms"] = {"clr": writer.scalars[("train/CLRLoss", k)]}
            s["source"] = firsts[k]
        else:   # the first backbone pass of their estimator step is the destination
            s["terms"] = {"sim": writer.scalars[("train/CROSSLoss", k)], "con": writer.scalars[("train/CONLoss", k)]}
            s["source"] = 1 - firsts[k]
        s["backbone_passes"] = per_step if task == "estimator" else None
    return rec.steps, snapshots


def psc6k_steps(state, batches, grids, task: str, lr: float):
    """psc6k's trainer step (``accumulated_step`` on the task's objective, ``--recipe released``)."""
    model = PSCNet()
    model.load_state_dict(state, strict=True)
    share_batchnorm(model.encoder_q)     # the released recipe (build_training_model)
    share_batchnorm(model.encoder_k)
    model.framework.bn_groups = 1        # one BN batch, as their trainer on one GPU
    model.train()
    feed = iter(grids)
    if task == "encoder":
        objective = EncoderObjective(model, recipe="released")
        params = model.encoder_parameters()
    else:
        objective = EstimatorObjective(model, recipe="released")
        params = list(model.stn.parameters())
        for p in model.framework.parameters():
            p.requires_grad_(False)
    objective.augment.color = nn.Identity()
    objective.augment.grids = lambda n, size, device: next(feed)
    optimizer = torch.optim.SGD([p for p in params if p.requires_grad], lr=lr, momentum=0.9, weight_decay=1e-4)
    rec = Recorder(model, optimizer)
    snapshots, terms, sources = [], [], []
    for i, (photo, sketch) in enumerate(batches):
        snapshots.append(_state(model))
        role = role_index("released", i, i)
        losses = accumulated_step(objective, optimizer, rec, photo, sketch, role,
                                  moco=model.framework if task == "encoder" else None)
        terms.append({"clr": losses["moco"]} if task == "encoder" else {"sim": losses["sim"], "con": losses["con"]})
        sources.append(_conditions(role)[0])
    snapshots.append(_state(model))
    for k, s in enumerate(rec.steps):
        s["terms"], s["source"] = terms[k], sources[k]
    return rec.steps, snapshots


# ------------------------------------------------------------------ comparison
def compare(task, theirs, ours) -> list[dict]:
    (t_steps, t_snaps), (o_steps, o_snaps) = theirs, ours
    rows = []
    for k in range(len(t_steps)):
        ts, os_ = t_steps[k], o_steps[k]
        rows.append(_row(task, k, "roles (source/query)", ROLE[ts["source"]], ROLE[os_["source"]],
                         "same" if ts["source"] == os_["source"] else "DIFFERENT"))
        rows.append(_num(task, k, "loss (total)", ts["loss"], os_["loss"]))
        for name in ts["terms"]:
            rows.append(_num(task, k, f"loss {name}", ts["terms"][name], os_["terms"][name]))
        keys = sorted(ts["grads"])
        missing = sorted(set(keys) ^ set(os_["grads"]))
        rows.append(_row(task, k, f"gradient L2 ({len(keys)} tensors)", f"{_l2(ts['grads'], keys):.6g}",
                         f"{_l2(os_['grads'], keys):.6g}" if not missing else f"tensor sets differ: {missing[:3]}",
                         f"rel. {_rel(os_['grads'], ts['grads'], keys):.1e}" if not missing else "-"))
        before_t, after_t, before_o, after_o = t_snaps[k], t_snaps[k + 1], o_snaps[k], o_snaps[k + 1]
        moved = [n for n in after_t if after_t[n].is_floating_point() and "running" not in n
                 and not torch.equal(after_t[n], before_t[n]) and n != "framework.queue"]
        d_t = {n: after_t[n] - before_t[n] for n in moved}
        d_o = {n: after_o[n] - before_o[n] for n in moved}
        rows.append(_row(task, k, f"SGD update (weights after - before, {len(moved)} tensors)",
                         f"{_l2(d_t, moved):.6g}", f"{_l2(d_o, moved):.6g}", f"rel. {_rel(d_o, d_t, moved):.1e}"))
        mkeys = sorted(ts["momentum"])
        rows.append(_row(task, k, f"SGD momentum buffers ({len(mkeys)})", f"{_l2(ts['momentum'], mkeys):.6g}",
                         f"{_l2(os_['momentum'], mkeys):.6g}", f"rel. {_rel(os_['momentum'], ts['momentum'], mkeys):.1e}"))
        if task == "encoder":
            kk = [n for n in moved if n.startswith(("encoder_k.", "framework.fc_k."))]
            rows.append(_row(task, k, f"key encoder + head after the step ({len(kk)} tensors moved)",
                             f"{_l2(d_t, kk):.6g}", f"{_l2(d_o, kk):.6g}", f"rel. {_rel(d_o, d_t, kk):.1e}"))
            rows.append(_row(task, k, "queue (all keys) / queue_ptr",
                             f"ptr {int(after_t['framework.queue_ptr'])}", f"ptr {int(after_o['framework.queue_ptr'])}",
                             f"rel. {_rel(after_o, after_t, ['framework.queue']):.1e}"))
        worst, where = _bn_max_rel(after_o, after_t)
        counter = "encoder_q.layer1.0.bn1.norms.0.num_batches_tracked"
        passes_t = int(after_t[counter] - before_t[counter])
        passes_o = int(after_o[counter] - before_o[counter])
        rows.append(_row(task, k, "query-encoder passes this step (BN counter)", str(passes_t), str(passes_o),
                         "same" if passes_t == passes_o else "DIFFERENT"))
        rows.append(_row(task, k, "BN running statistics (all layers)", "-", "-",
                         f"max rel. {worst:.1e}" + (f" ({where})" if worst > 1e-4 else "")))
    return rows


def _row(task, k, what, theirs, ours, diff) -> dict:
    return {"task": task, "step": k, "quantity": what, "theirs": theirs, "psc6k": ours, "difference": diff}


def _num(task, k, what, a, b) -> dict:
    return _row(task, k, what, f"{a:.7g}", f"{b:.7g}", f"rel. {abs(a - b) / max(abs(a), 1e-30):.1e}")


def lr_rows(A) -> list[dict]:
    """Every epoch's learning rate of a default run: their adjust_learning_rate after their
    ``args.epochs + 1``, psc6k's lr_at_epoch over TrainConfig.epochs_run."""
    rows = []
    for task, lr in (("encoder", 0.03), ("estimator", 0.003)):
        cfg = TrainConfig(task, epochs=1500)
        args = types.SimpleNamespace(lr=lr, epochs=1500 + 1, start_epoch=0, warmup_epochs=100, cos=True)
        opt = types.SimpleNamespace(param_groups=[{}])
        theirs = [A["train_psc"].adjust_learning_rate(opt, e, args) for e in range(args.epochs)]
        ours = [lr_at_epoch(e, cfg.epochs_run, cfg.learning_rate, cfg.warmup_epochs, cfg.cos)
                for e in range(cfg.epochs_run)]
        n = min(len(theirs), len(ours))
        worst = max(abs(a - b) for a, b in zip(theirs[:n], ours[:n])) / lr
        rows.append(_row(task, "-", "learning rate, every epoch of --epochs 1500",
                         f"{len(theirs)} epochs", f"{len(ours)} epochs", f"max {worst:.0e} x lr"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors", metavar="DIR", help="a checkout of cogtoolslab/photo-sketch-correspondence")
    ap.add_argument("--batch", type=int, default=8, help="batch size (divides their MoCo K = 8192)")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    args = ap.parse_args(argv)
    if not args.authors:
        print(HOW_TO_GET)
        return 2
    if 8192 % args.batch:
        ap.error("--batch must divide 8192 (their MoCo asserts K % batch == 0)")
    if args.threads:
        torch.set_num_threads(args.threads)
    A = import_authors(Path(args.authors))
    tmp = tempfile.mkdtemp(prefix="bench_train_step_")
    one_process_group(tmp)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)     # their warp generator draws from numpy and random
    weights = PSCNet()
    share_batchnorm(weights.encoder_q)
    share_batchnorm(weights.encoder_k)
    state = {k: v.detach().clone() for k, v in weights.state_dict().items()}
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = [(torch.rand(args.batch, 3, args.size, args.size, generator=g),
                torch.rand(args.batch, 3, args.size, args.size, generator=g)) for _ in range(2)]
    with cpu_shims():
        synth = A["Synth"](random_t=1 / 2, random_alpha=np.pi / 8, random_t_tps=1 / 4, tps_grid_size=4,
                           random_s=(0.5, 1.5), tps_reg_factor=0.0, random_t_tps_for_afftps=1 / 4,
                           size_output_flow=(args.size, args.size), flip=False,
                           transformation_types=["affine", "tps", "afftps"], use_cuda=False)
        # per step: the source's (query's) grids, then the destination's (key's), as both draw them
        grids = [torch.cat([synth() for _ in range(args.batch)]) for _ in range(4)]
    # the floor: their own step once more on the batch moved by one float32 rounding step
    # (relative 2^-24 noise); a difference at or below it is rounding, amplified by the step
    gp = torch.Generator().manual_seed(args.seed + 3)
    nudged = [tuple(x * (1 + 2.0 ** -24 * torch.randn(x.shape, generator=gp)) for x in b) for b in batches]
    rows = []
    for task, lr in (("encoder", 0.03), ("estimator", 0.003)):
        runs = {}
        for name, data in (("theirs", batches), ("floor", nudged), ("psc6k", batches)):
            torch.manual_seed(args.seed + 2)
            if name == "psc6k":
                runs[name] = psc6k_steps(state, data, grids, task, lr)
            else:
                with cpu_shims():
                    runs[name] = their_steps(A, state, data, grids, task, lr, args.batch)
        task_rows = compare(task, runs["theirs"], runs["psc6k"])
        for r, f in zip(task_rows, compare(task, runs["theirs"], runs["floor"])):
            r["floor"] = f["difference"]
        rows += task_rows
    rows += lr_rows(A)
    dist.destroy_process_group()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"# psc6k train --recipe released vs the authors' trainer.py: ResNet-18, {args.size} px, batch "
          f"{args.batch}, CPU float32, colour off, same weights / batch / warp grids (torch {torch.__version__})")
    print("floor: their step against itself on the batch moved by one float32 rounding step (2^-24)")
    print("| task | step | quantity | theirs | psc6k | difference | floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['step']} | {r['quantity']} | {r['theirs']} | {r['psc6k']} | {r['difference']} "
              f"| {r.get('floor', '-')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
