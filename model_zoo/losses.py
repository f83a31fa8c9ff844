"""PSCNet training losses (SPEC §6): weighted perceptual similarity and forward-backward consistency.

Flow convention: ``flow_ab`` [N, h, w, 2] lives on grid A and points into image B
(``grid_sample`` coordinates, ``align_corners=True``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from model_zoo.stn import identity_grid, safe_grid

__all__ = ["affinity", "similarity_loss", "compose_flows", "consistency_loss", "released_consistency_loss",
           "masked_mse", "warp_features"]


def _stack_layers(feats: Mapping[str, Tensor], layers: Sequence[int], size: int) -> Tensor:
    maps = [F.interpolate(feats[f"layer{i}"].float(), (size, size), mode="bilinear", align_corners=False)
            for i in layers]
    return torch.cat(maps, dim=1)


def affinity(source: Mapping[str, Tensor], target: Mapping[str, Tensor], layers: Sequence[int] = (2, 3),
             size: int = 16) -> Tensor:
    """Doubly L1-normalised affinity [N, P, P] (P = size**2) between two feature dicts.

    The selected stages are resized to ``size`` x ``size`` and concatenated; entry [n, i, j] is
    the dot product of source position i and target position j, normalised (L1) first over
    source positions, then over target positions.
    """
    a = _stack_layers(source, layers, size).flatten(2)  # [N, C, P]
    b = _stack_layers(target, layers, size).flatten(2)
    corr = torch.bmm(a.transpose(1, 2), b)
    corr = F.normalize(corr, p=1, dim=1)
    return F.normalize(corr, p=1, dim=2)


def similarity_loss(warped: Mapping[str, Tensor], target: Mapping[str, Tensor], layers: Sequence[int] = (2, 3),
                    size: int = 16, tau: float = 0.001, weighted: bool = True, softmax_over: str = "target") -> Tensor:
    """Weighted perceptual similarity loss between re-encoded warped source and target features.

    ``softmax_over="target"`` (paper Eq. 4): for every warped-source position i, a softmax with
    temperature ``tau`` over the target positions j of the affinity (:func:`affinity`) should
    peak at j = i. ``softmax_over="source"`` (the authors' ``trainer.py``: their
    ``CrossEntropyLoss`` gets the [N, P, P] affinity, whose class axis is dim 1, the warped-source
    positions): for every target position j, the softmax runs over the source positions i.
    Position k is weighted by ``max_j affinity[k, j]``, min-max scaled over the batch (detached),
    so confident, distinctive positions count more.

    Parameters
    ----------
    warped : dict of Tensor
        Features of the source image warped onto the target grid and encoded again.
    target : dict of Tensor
        Features of the target image (treated as constants).
    """
    corr = affinity(warped, {k: v.detach() for k, v in target.items()}, layers, size)  # [N, P, P]
    n, p, _ = corr.shape
    labels = torch.arange(p, device=corr.device).expand(n, p)
    if softmax_over not in ("target", "source"):
        raise ValueError(f"softmax_over must be 'target' or 'source', got {softmax_over!r}")
    # cross_entropy's class axis is dim 1: [N, j, i] -> classes j (target); [N, i, j] -> classes i (source)
    logits = corr.transpose(1, 2) if softmax_over == "target" else corr
    ce = F.cross_entropy(logits / tau, labels, reduction="none")
    if not weighted:
        return ce.mean()
    with torch.no_grad():
        weight = corr.max(dim=2).values
        weight = weight - weight.min()
        weight = weight / weight.max().clamp_min(torch.finfo(weight.dtype).tiny)
    return (ce * weight).mean()


def compose_flows(flow_ab: Tensor, flow_ba: Tensor) -> Tensor:
    """``flow_ab`` read at the points ``flow_ba`` gives: the round trip B -> A -> B, on grid B.

    An exact inverse pair returns the identity grid (where ``flow_ba`` stays inside the image).
    """
    return F.grid_sample(flow_ab.permute(0, 3, 1, 2), safe_grid(flow_ba.to(flow_ab.dtype)), mode="bilinear",
                         padding_mode="border", align_corners=True).permute(0, 2, 3, 1)


def consistency_loss(flow_ab: Tensor, flow_ba: Tensor) -> Tensor:
    """Forward-backward consistency: mean squared distance of the round trip to the identity.

    Positions whose backward flow leaves the image ([-1, 1]) or is not finite have no defined
    round trip and are left out, as in the released training code.
    """
    cycle = compose_flows(flow_ab.float(), flow_ba.float())
    base = identity_grid(flow_ba.shape[1], device=flow_ba.device).expand_as(cycle)
    valid = (flow_ba.detach().abs() <= 1).all(dim=-1) & torch.isfinite(flow_ba.detach()).all(dim=-1)
    err = ((cycle - base) ** 2).sum(dim=-1)
    if not bool(valid.any()):
        return err.sum() * 0.0
    return err[valid].mean() / 2.0  # mean over both coordinates, as an MSE


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """The authors' ``MaskMSE`` (``utils/losses.py``): element-wise squared error averaged over the
    coordinates where neither value is 0 (zero padding) nor outside [-1, 1]."""
    err = (pred - target) ** 2
    mask = (pred != 0) & (target != 0) & (pred.abs() <= 1) & (target.abs() <= 1)
    mask = mask.detach()
    if not bool(mask.any()):
        return err.sum() * 0.0
    return err[mask].mean()


def released_consistency_loss(flow_fwd: Tensor, flow_bwd: Tensor) -> Tensor:
    """Forward-backward consistency as the authors' ``trainer.py`` computes it: ``flow_fwd`` read
    at ``flow_bwd`` with *nearest* sampling and zero padding, compared with the identity by
    :func:`masked_mse`; one direction only."""
    cycle = F.grid_sample(flow_fwd.float().permute(0, 3, 1, 2), safe_grid(flow_bwd.float()), mode="nearest",
                          padding_mode="zeros", align_corners=True).permute(0, 2, 3, 1)
    base = identity_grid(flow_bwd.shape[1], device=flow_bwd.device).expand_as(cycle)
    return masked_mse(cycle, base)


def warp_features(feats: Mapping[str, Tensor], flow: Tensor, layers: Sequence[int]) -> dict[str, Tensor]:
    """Feature maps read at ``flow`` (bilinear, zero padding): the ``--no-perceptual`` ablation's
    stand-in for re-encoding the warped image (their ``STN.grid_sample``)."""
    return {f"layer{i}": F.grid_sample(feats[f"layer{i}"], safe_grid(flow.to(feats[f"layer{i}"].dtype)),
                                       mode="bilinear", padding_mode="zeros", align_corners=True)
            for i in layers}
