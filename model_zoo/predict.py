"""Run a PSCNet over annotated pairs and produce a flow submission (:class:`psc6k.submission.Submission`)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model_zoo.data import ImageError, PairDataset, unwrap_worker_error
from model_zoo.pscnet import PSCNet
from psc6k.errors import Psc6kError
from psc6k.submission import Submission

__all__ = ["resolve_device", "iter_pair_batches", "predict_flows_batched", "predict_submission"]


def resolve_device(name: str | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``None``/``"auto"`` (CUDA when available)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise Psc6kError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Psc6kError(f"device {name!r} was asked for but CUDA is not available here "
                             f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use `device` cpu", param="device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise Psc6kError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise Psc6kError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def iter_pair_batches(loader, progress: bool = True, total: int | None = None):
    """Yield ``(indices, photo, sketch)`` batches of a :class:`PairDataset` loader with a progress
    bar (advanced after the consumer is done with a batch); an unreadable image in a worker
    process is re-raised as the one clear :class:`ImageError`."""
    bar = tqdm(total=total, unit="pair", desc="predict", disable=not progress)
    batches = iter(loader)
    try:
        while True:
            try:
                idx, photo, sketch = next(batches)
            except StopIteration:
                break
            except ImageError as exc:
                raise unwrap_worker_error(exc) from None
            yield idx, photo, sketch
            bar.update(len(idx))
    finally:
        bar.close()


@torch.inference_mode()
def predict_flows_batched(model: PSCNet, loader, device: torch.device, amp: bool = True, progress: bool = True,
                          total: int | None = None):
    """Yield ``(indices, sketch_to_photo, photo_to_sketch)`` as float32 numpy arrays per batch."""
    model.eval()
    for idx, photo, sketch in iter_pair_batches(loader, progress, total):
        # channels_last: ~30% less time per pair on CPU at batch 16 (benchmarks/bench_model.py)
        photo = photo.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        sketch = sketch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            s2p, p2s = model.predict_flows(photo, sketch)
        yield (np.asarray(idx), s2p.float().cpu().numpy(), p2s.float().cpu().numpy())


def predict_submission(model: PSCNet, photos, sketches, images_root, *, device="cpu", batch_size: int = 16,
                       amp: bool = True, num_workers: int = 0, image_size: int = 256, method: str = "PSCNet",
                       progress: bool = True) -> Submission:
    """Predict both flows for every (photo, sketch) pair and return a flow submission.

    Parameters
    ----------
    model : PSCNet
    photos, sketches : sequences of str
        Paths relative to ``images_root`` (the Sketchy root), e.g. ``Annotations.photo``.
    device : str or torch.device
    batch_size : int
    amp : bool
        float16 autocast on CUDA (ignored on CPU).
    num_workers : int
        DataLoader worker processes for image decoding.
    image_size : int
        Side the images are resized to before the model (256 for the released models).

    Returns
    -------
    Submission
        ``kind="flow"``, arrays float32 [N, 16, 16, 2] (flow_size of the model).
    """
    if batch_size < 1:
        raise Psc6kError(f"batch size must be >= 1, got {batch_size}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(device, memory_format=torch.channels_last)
    dataset = PairDataset(photos, sketches, images_root, image_size)
    dataset.check_files()  # before any work: a missing image is named at once
    n = len(dataset)
    size = model.config.flow_size
    s2p = np.empty((n, size, size, 2), np.float32)
    p2s = np.empty((n, size, size, 2), np.float32)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    for idx, a, b in predict_flows_batched(model, loader, device, amp, progress, total=n):
        s2p[idx], p2s[idx] = a, b
    return Submission(method=method, kind="flow", photo=list(photos), sketch=list(sketches),
                      sketch_to_photo=s2p, photo_to_sketch=p2s)
