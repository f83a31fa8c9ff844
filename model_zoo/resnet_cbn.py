"""ResNet with conditional BatchNorm: the PSCNet feature encoder (SPEC §6).

Same structure and parameter names as torchvision's ``resnet.py`` (``conv1``, ``bn1``,
``layer1.0.conv1`` ...), with two differences that the released checkpoints depend on:

* every BatchNorm is a :class:`ConditionalBatchNorm2d` holding one ``nn.BatchNorm2d`` per
  condition (``bn1.norms.0`` for photos, ``bn1.norms.1`` for sketches);
* every 3x3 convolution (and the 7x7 stem, as in the released code) pads with
  ``padding_mode="replicate"``.

There is no classification head: :meth:`ResNetCBN.forward` returns the feature maps
``layer1`` ... ``layer4`` (and optionally the globally pooled ``layer4`` vector that the MoCo
head consumes).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

PHOTO = 0
SKETCH = 1

__all__ = ["PHOTO", "SKETCH", "ConditionalBatchNorm2d", "ConditionalSequential", "BasicBlock",
           "Bottleneck", "ResNetCBN", "RESNET_LAYERS", "resnet_cbn", "share_batchnorm", "batchnorm_is_shared"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, replicate padding, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False, padding_mode="replicate")


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ConditionalBatchNorm2d(nn.Module):
    """One BatchNorm per input domain; ``forward(x, condition)`` uses ``norms[condition]``.

    Parameters
    ----------
    num_features : int
        Channels.
    num_conditions : int
        Domains; PSCNet uses 2 (0 = photo, 1 = sketch).

    Notes
    -----
    The released training code built ``nn.ModuleList([bn] * 2)``: the *same* BatchNorm twice,
    so the released checkpoints store two identical copies. Here the copies are independent
    modules (what the paper describes; ``psc6k train --recipe paper``); on released weights both
    give the same outputs. :func:`share_batchnorm` makes them one module again, as the authors
    trained (``--recipe released``).
    """

    def __init__(self, num_features: int, num_conditions: int = 2):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in range(num_conditions))

    def forward(self, x: Tensor, condition: int) -> Tensor:
        if not 0 <= condition < len(self.norms):
            raise ValueError(f"BatchNorm condition must be in [0, {len(self.norms)}), got {condition!r}")
        return self.norms[condition](x)


class ConditionalSequential(nn.Sequential):
    """``nn.Sequential`` that hands the condition to the children that take one."""

    def forward(self, x: Tensor, condition: int) -> Tensor:  # type: ignore[override]
        for module in self:
            if isinstance(module, (ConditionalBatchNorm2d, ConditionalSequential, BasicBlock, Bottleneck)):
                x = module(x, condition)
            else:
                x = module(x)
        return x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, num_conditions: int = 2):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = ConditionalBatchNorm2d(planes, num_conditions)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = ConditionalBatchNorm2d(planes, num_conditions)
        self.downsample = downsample

    def forward(self, x: Tensor, condition: int) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x, condition)
        out = self.relu(self.bn1(self.conv1(x), condition))
        out = self.bn2(self.conv2(out), condition)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, num_conditions: int = 2):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = ConditionalBatchNorm2d(planes, num_conditions)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = ConditionalBatchNorm2d(planes, num_conditions)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = ConditionalBatchNorm2d(planes * self.expansion, num_conditions)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor, condition: int) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x, condition)
        out = self.relu(self.bn1(self.conv1(x), condition))
        out = self.relu(self.bn2(self.conv2(out), condition))
        out = self.bn3(self.conv3(out), condition)
        return self.relu(out + identity)


#: arch name -> (block type, blocks per stage)
RESNET_LAYERS: dict[str, tuple[type, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNetCBN(nn.Module):
    """ResNet trunk with conditional BatchNorm returning ``{"layer1": ..., "layer4": ...}``.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : 4 ints
        Blocks per stage.
    width : int
        Channels of the stem and of ``layer1`` (64 in every released model; smaller values give
        cheap models for tests and CPU training).
    replace_stride_with_dilation : 3 bools
        As in torchvision: dilate ``layer2``/``layer3``/``layer4`` instead of striding.
    num_conditions : int
        BatchNorm copies (2: photo, sketch).
    """

    def __init__(self, block: type, layers: Sequence[int], width: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False),
                 num_conditions: int = 2):
        super().__init__()
        if len(layers) != 4 or len(replace_stride_with_dilation) != 3:
            raise ValueError("layers needs 4 entries and replace_stride_with_dilation 3")
        self.block = block
        self.num_conditions = num_conditions
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False,
                               padding_mode="replicate")
        self.bn1 = ConditionalBatchNorm2d(width, num_conditions)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(width * 4, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(width * 8, layers[3], 2, replace_stride_with_dilation[2])
        #: channels of each returned feature map
        self.channels = {f"layer{i + 1}": width * 2 ** i * block.expansion for i in range(4)}

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> ConditionalSequential:
        block = self.block
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = ConditionalSequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                ConditionalBatchNorm2d(planes * block.expansion, self.num_conditions),
            )
        stage = [block(self.inplanes, planes, stride, downsample, previous_dilation, self.num_conditions)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, dilation=self.dilation, num_conditions=self.num_conditions)
                  for _ in range(1, blocks)]
        return ConditionalSequential(*stage)

    def forward(self, x: Tensor, condition: int, last_layer: int = 4) -> dict[str, Tensor]:
        """Feature maps of ``x`` (normalised RGB, [N, 3, H, W]) under BatchNorm ``condition``.

        Returns ``{"layer1": [N, C1, H/4, W/4], ..., f"layer{last_layer}": ...}``; stages after
        ``last_layer`` are not computed.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x), condition)))
        feats = {}
        for i in range(1, last_layer + 1):
            x = getattr(self, f"layer{i}")(x, condition)
            feats[f"layer{i}"] = x
        return feats

    def pooled(self, x: Tensor, condition: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Global average of ``layer4`` ([N, C4]) and all feature maps (for the MoCo head)."""
        feats = self.forward(x, condition, last_layer=4)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(feats["layer4"], 1), 1), feats


def resnet_cbn(arch: str = "resnet18", **kwargs) -> ResNetCBN:
    """Build a conditional-BN ResNet by torchvision name (``resnet18``, ``resnet50``, ``resnet101`` ...)."""
    try:
        block, layers = RESNET_LAYERS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(RESNET_LAYERS)}") from None
    return ResNetCBN(block, layers, **kwargs)


def share_batchnorm(encoder: nn.Module) -> nn.Module:
    """Make every :class:`ConditionalBatchNorm2d` of ``encoder`` use one BatchNorm for all conditions.

    This is what the authors' code trains (``nn.ModuleList([bn] * 2)`` in their
    ``models/resnet_cbn.py``): both conditions read and update the *same* module, so its
    checkpoints hold identical ``norms.0`` / ``norms.1`` copies. The state-dict layout is
    unchanged (the shared module is listed under both names). Copy 0 is kept.
    """
    for m in encoder.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            first = m.norms[0]
            for c in range(1, len(m.norms)):
                m.norms[c] = first
    return encoder


def batchnorm_is_shared(encoder: nn.Module) -> bool:
    """True when every conditional BatchNorm of ``encoder`` is one module for all conditions."""
    cbns = [m for m in encoder.modules() if isinstance(m, ConditionalBatchNorm2d)]
    return bool(cbns) and all(all(n is m.norms[0] for n in m.norms) for m in cbns)
