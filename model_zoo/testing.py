"""Helpers for tests and benchmarks: tiny models, tiny Sketchy-shaped trees, and state dicts in
the released layout built from the reference ``.tsv`` key lists (random values)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model_zoo.pscnet import PSCNet
from psc6k.sketchy import photo_relpath, sketch_relpath

__all__ = ["tiny_model", "NoScaler", "read_state_dict_tsv", "random_released_state_dict", "make_tiny_tree", "zero_residuals",
           "REFERENCE_DIR"]

#: the released key lists of SPEC §6 (``reference/*.tsv``), shipped with the package
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

TINY = dict(width=8, moco_queue=64, moco_dim=16, feat_size=8, block_sizes=(2, 4, 8), flow_size=8)


def tiny_model(**overrides) -> PSCNet:
    """A PSCNet small enough for CPU unit tests (ResNet-18 layout, 8 stem channels, 8x8 STN)."""
    return PSCNet(**{**TINY, **overrides})


class NoScaler:
    """A disabled ``GradScaler`` for :func:`model_zoo.train.accumulated_step` outside CUDA AMP:
    the loss unscaled, ``step`` the optimizer's."""

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass


def read_state_dict_tsv(path) -> list[tuple[str, tuple[int, ...], str]]:
    """Rows ``(key, shape, dtype)`` of a reference ``*_state_dict.tsv`` (tab separated)."""
    rows = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), dtype))
    return rows


def random_released_state_dict(rows, *, seed: int = 0, prefix: str = "module.", distinct_bn: bool = True) -> dict:
    """A state dict with the released keys/shapes/dtypes and random values.

    The ``encoder_q.*``/``framework.encoder_q.*`` (and ``encoder_k``) copies share values, as in
    the released files. With ``distinct_bn`` the photo and sketch BatchNorm copies differ (the
    released files hold identical copies; distinct ones let a test see which copy is used).
    """
    g = torch.Generator().manual_seed(seed)
    values: dict[str, torch.Tensor] = {}
    for key, shape, dtype in rows:
        alias = key[len("framework."):] if key.startswith("framework.encoder_") else None
        if alias is not None and alias in values:
            values[key] = values[alias]
            continue
        if dtype == "int64":
            t = torch.randint(0, 100, shape, generator=g, dtype=torch.int64)
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        else:
            t = 0.05 * torch.randn(shape, generator=g)
        values[key] = t
    if not distinct_bn:
        for key in list(values):
            if ".norms.1." in key:
                values[key] = values[key.replace(".norms.1.", ".norms.0.")]
    return {prefix + k: v for k, v in values.items()}


def zero_residuals(model: PSCNet) -> PSCNet:
    """Zero the last convolution of every STN block: the model then predicts the identity flow."""
    with torch.no_grad():
        for name in model.stn.block_names:
            last = [m for m in getattr(model.stn, name) if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.zero_()
            last.bias.zero_()
    return model


def make_tiny_tree(root, n_pairs: int = 4, size: int = 64, categories=("airplane", "cat"), seed: int = 0):
    """Write a tiny Sketchy-shaped tree of random photos (JPEG) and line sketches (PNG).

    Returns ``(photo_paths, sketch_paths)`` relative to ``root``; pair i is a shifted square in
    the photo and its outline in the sketch, so there is *some* structure to learn.
    """

    rng = np.random.default_rng(seed)
    root = Path(root)
    photos, sketches = [], []
    for i in range(n_pairs):
        cat = categories[i % len(categories)]
        pid = f"n{1000 + i:08d}_{i}"
        p_rel, s_rel = photo_relpath(cat, pid), sketch_relpath(cat, f"{pid}-1")
        x0, y0 = rng.integers(size // 8, size // 2, size=2)
        side = size // 3
        photo = (rng.random((size, size, 3)) * 60 + 150).astype(np.uint8)
        photo[y0:y0 + side, x0:x0 + side] = rng.integers(0, 120, size=3)
        sketch = np.full((size, size, 3), 255, np.uint8)
        dx, dy = rng.integers(-3, 4, size=2)
        a, b = y0 + dy, x0 + dx
        sketch[a:a + side, b:b + 2] = 0
        sketch[a:a + side, b + side - 2:b + side] = 0
        sketch[a:a + 2, b:b + side] = 0
        sketch[a + side - 2:a + side, b:b + side] = 0
        for rel, arr, fmt in ((p_rel, photo, "JPEG"), (s_rel, sketch, "PNG")):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, fmt)
        photos.append(p_rel)
        sketches.append(s_rel)
    return photos, sketches
