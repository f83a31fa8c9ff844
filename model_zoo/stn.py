"""The PSCNet warp estimator: a coarse-to-fine spatial transformer on feature correlations (SPEC §6).

Flow convention (SPEC §5): ``stn(source_feats, target_feats)`` returns a flow of shape
[N, S, S, 2] laid on the *target* grid whose entry ``[i, j] = (u, v)`` is where target pixel
(row i, col j) lands in the *source*, in ``grid_sample(align_corners=True)`` coordinates. So
``stn(photo_feats, sketch_feats)`` is ``sketch_to_photo``.

State-dict names follow the released checkpoints: ``base_map`` and ``net_4x|net_8x|net_16x.<i>``
where ``<i>`` indexes an ``nn.Sequential`` of Conv/BN/LeakyReLU triples.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WarpEstimator", "identity_grid", "correlation", "warp", "safe_grid"]


def identity_grid(size: int, *, device=None, dtype=torch.float32) -> Tensor:
    """The identity flow [1, size, size, 2] in ``align_corners=True`` coordinates (u = x first)."""
    # equal to F.affine_grid(identity, [1, 1, size, size], align_corners=True), without its cost
    lin = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([u, v], dim=-1).unsqueeze(0)


def correlation(target: Tensor, source: Tensor) -> Tensor:
    """Dense dot-product correlation volume.

    Parameters
    ----------
    target, source : Tensor [N, C, H, W]

    Returns
    -------
    Tensor [N, H*W, H, W]
        Channel ``k = row * W + col`` holds ``<target[:, :, row, col], source[:, :, i, j]>`` at
        spatial position (i, j) -- the released layout (channels index target positions).
    """
    n, c, h, w = source.shape
    t = target.permute(0, 2, 3, 1).reshape(n, h * w, c)
    s = source.reshape(n, c, h * w)
    return torch.bmm(t, s).view(n, h * w, h, w)


def safe_grid(grid: Tensor, limit: float = 4.0) -> Tensor:
    """``grid`` with NaN replaced by 0 and values clamped to [-limit, limit].

    Sampling far outside [-1, 1] reads only padding, so the clamp changes no output; it keeps a
    diverging training run (or a broken checkpoint) from feeding huge coordinates to
    ``grid_sample``, whose CPU kernel can crash on them.
    """
    return torch.nan_to_num(grid, nan=0.0).clamp(-limit, limit)


def warp(features: Tensor, flow: Tensor) -> Tensor:
    """Sample ``features`` [N, C, H, W] at ``flow`` [N, h, w, 2] (bilinear, zeros outside)."""
    return F.grid_sample(features, safe_grid(flow.to(features.dtype)), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def _conv_bn_lrelu(cin: int, cout: int, kernel: int, stride: int, padding: int, bias: bool) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias),
            nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]


class WarpEstimator(nn.Module):
    """Three STN blocks regressing flows at 4x4, 8x8 and 16x16, each refining the previous one.

    Parameters
    ----------
    corr_layers : sequence of int
        Encoder stages whose features are correlated (PSCNet: ``(2, 3)``).
    feat_size : int
        Features are resized (bilinear, ``align_corners=False``) to ``feat_size`` squared before
        correlating; each correlation volume has ``feat_size**2`` channels.
    flow_size : int
        Side of the returned flow (16).
    block_sizes : sequence of int
        Output side of each block before its upsampling to ``flow_size`` (4, 8, 16).
    num_layers : int
        Channel-halving 3x3 conv layers per block (5).
    normalize : bool
        Correlate L2-normalised features (cosine similarity) instead of raw dot products. Off in
        the released models; useful when the encoder is untrained (raw products of random
        features mostly measure feature magnitude, not similarity).
    """

    def __init__(self, corr_layers: Sequence[int] = (2, 3), feat_size: int = 16, flow_size: int = 16,
                 block_sizes: Sequence[int] = (4, 8, 16), num_layers: int = 5, normalize: bool = False):
        super().__init__()
        self.normalize = normalize
        self.corr_layers = tuple(corr_layers)
        self.feat_size = feat_size
        self.flow_size = flow_size
        self.block_sizes = tuple(block_sizes)
        self.block_names = tuple(f"net_{s}x" for s in self.block_sizes)
        for size, name in zip(self.block_sizes, self.block_names):
            self.add_module(name, self._make_block(size, num_layers))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # tiny weights: an untrained estimator predicts (almost) the identity flow
                nn.init.normal_(m.weight, std=1e-3)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("base_map", identity_grid(flow_size))

    def _make_block(self, output_size: int, num_layers: int) -> nn.Sequential:
        stride = self.feat_size // output_size
        if stride < 1 or self.feat_size % output_size:
            raise ValueError(f"block size {output_size} must divide feat_size {self.feat_size}")
        channels = self.feat_size ** 2 * len(self.corr_layers)
        layers = _conv_bn_lrelu(channels, channels, stride, stride, 0, bias=True)
        for _ in range(num_layers):
            layers += _conv_bn_lrelu(channels, channels // 2, 3, 1, 1, bias=False)
            channels //= 2
        layers += [nn.Conv2d(channels, 2, 3, padding=1, bias=True),
                   nn.Upsample(size=(self.flow_size, self.flow_size), mode="bilinear", align_corners=True)]
        return nn.Sequential(*layers)

    def resize(self, feats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The correlated stages resized to ``feat_size`` (bilinear, ``align_corners=False``)."""
        size = (self.feat_size, self.feat_size)
        out = {f"layer{i}": F.interpolate(feats[f"layer{i}"], size, mode="bilinear", align_corners=False)
               for i in self.corr_layers}
        if self.normalize:
            out = {k: F.normalize(v, dim=1) for k, v in out.items()}
        return out

    def correlate(self, target: Mapping[str, Tensor], source: Mapping[str, Tensor]) -> Tensor:
        """Concatenated correlation volumes of the selected stages, [N, len(corr_layers) * S*S, S, S]."""
        return torch.cat([correlation(target[k], source[k]) for k in target], dim=1)

    def forward(self, source_feats: Mapping[str, Tensor], target_feats: Mapping[str, Tensor],
                return_all: bool = False):
        """Flow on the target grid pointing into the source, [N, flow_size, flow_size, 2].

        With ``return_all`` the flows after every block are returned, finest first.
        """
        target = self.resize(target_feats)
        flows = []
        flow = None
        for name in self.block_names:
            # Warp the source with the current estimate so that the block predicts a residual.
            # As in the released model, the full-resolution maps are warped (then resized).
            if flow is None:
                warped = self.resize(source_feats)
            else:
                warped = self.resize({f"layer{i}": warp(source_feats[f"layer{i}"], flow) for i in self.corr_layers})
            residual = getattr(self, name)(self.correlate(target, warped)).permute(0, 2, 3, 1)
            flow = residual + self.base_map.to(residual.dtype) if flow is None else flow + residual
            flows.append(flow)
        return tuple(reversed(flows)) if return_all else flow
