"""PSCNet: conditional-BN ResNet encoder + MoCo head + STN warp estimator (SPEC §6).

The module tree reproduces the released checkpoints' state-dict keys exactly (see
``/work/shared/reference/*.tsv``)::

    pos_map                        [1, 2, 16, 16]
    encoder_q.* / encoder_k.*      the query/key encoders ...
    framework.queue, framework.queue_ptr
    framework.encoder_q.* / framework.encoder_k.*   ... registered a second time (same modules)
    framework.fc_q.* / framework.fc_k.*
    stn.base_map, stn.net_4x|net_8x|net_16x.<i>.*

``encoder_q`` and ``framework.encoder_q`` are one module listed under two names, as in the
released code, so both key sets are loaded into the same tensors.

Inputs are RGB images in [0, 1], [N, 3, H, W]; the model applies the ImageNet normalisation itself.
"""

from __future__ import annotations

import dataclasses
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_zoo.moco import MoCo
from model_zoo.resnet_cbn import PHOTO, SKETCH, resnet_cbn
from model_zoo.stn import WarpEstimator, identity_grid

__all__ = ["PSCNetConfig", "PSCNet", "IMAGENET_MEAN", "IMAGENET_STD", "PHOTO", "SKETCH"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PSCNetConfig:
    """Everything that fixes the architecture (stored in our checkpoints as ``config["model"]``).

    The defaults are the released ResNet-18 model; the released ResNet-101 differs only in
    ``arch``. ``width`` < 64 or ``feat_size`` < 16 give small models for tests and CPU training.
    """

    arch: str = "resnet18"
    width: int = 64
    corr_layers: tuple[int, ...] = (2, 3)
    feat_size: int = 16
    flow_size: int = 16
    block_sizes: tuple[int, ...] = (4, 8, 16)
    stn_layers: int = 5
    moco_dim: int = 128
    moco_queue: int = 8192
    moco_momentum: float = 0.999
    moco_temperature: float = 0.07
    replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False)
    corr_normalize: bool = False   # cosine instead of dot-product correlation (not in released models)

    @classmethod
    def from_dict(cls, d: dict) -> "PSCNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PSCNet config fields: {sorted(unknown)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fixed)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class PSCNet(nn.Module):
    """The photo-sketch correspondence network of Lu, Wang & Fan (ICML 2023).

    Parameters
    ----------
    config : PSCNetConfig, optional
        Architecture; keyword arguments override its fields, e.g. ``PSCNet(arch="resnet101")``.

    Examples
    --------
    >>> model = PSCNet(width=8, feat_size=8, block_sizes=(2, 4, 8), flow_size=8, moco_queue=16).eval()
    >>> photo = sketch = torch.rand(1, 3, 64, 64)
    >>> s2p, p2s = model.predict_flows(photo, sketch)
    >>> tuple(s2p.shape)
    (1, 8, 8, 2)
    """

    def __init__(self, config: PSCNetConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or PSCNetConfig(), **overrides)
        self.config = config
        # pos_map first: state-dict order as released
        self.register_buffer("pos_map", identity_grid(config.flow_size).permute(0, 3, 1, 2).contiguous())
        encoder_kwargs = dict(width=config.width, replace_stride_with_dilation=config.replace_stride_with_dilation)
        self.encoder_q = resnet_cbn(config.arch, **encoder_kwargs)
        self.encoder_k = resnet_cbn(config.arch, **encoder_kwargs)
        self.framework = MoCo(self.encoder_q, self.encoder_k, dim=config.moco_dim, queue_size=config.moco_queue,
                              momentum=config.moco_momentum, temperature=config.moco_temperature)
        self.stn = WarpEstimator(config.corr_layers, config.feat_size, config.flow_size, config.block_sizes,
                                 config.stn_layers, config.corr_normalize)
        # not in the state dict: the normalisation is part of the code, not of the weights
        self.register_buffer("mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_constants()

    def reset_constants(self) -> None:
        """(Re)set the buffers that are code, not weights (also after building on the meta device)."""
        device = self.pos_map.device if self.pos_map.device.type != "meta" else None
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    # ------------------------------------------------------------------ encoder
    def normalize(self, images: Tensor) -> Tensor:
        """ImageNet normalisation of RGB images in [0, 1]."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def encode(self, images: Tensor, condition: int) -> dict[str, Tensor]:
        """Feature maps ``layer1`` .. up to the last correlated stage of RGB images in [0, 1].

        ``condition`` picks the BatchNorm copy: :data:`PHOTO` (0) or :data:`SKETCH` (1).
        """
        return self.encoder_q(self.normalize(images), condition, last_layer=max(self.config.corr_layers))

    def encode_all(self, images: Tensor, condition: int) -> dict[str, Tensor]:
        """All four feature maps ``layer1`` .. ``layer4``."""
        return self.encoder_q(self.normalize(images), condition, last_layer=4)

    # ------------------------------------------------------------------ estimator
    def estimate(self, source_feats, target_feats, return_all: bool = False):
        """Flow on the target grid pointing into the source (see :class:`WarpEstimator`)."""
        return self.stn(source_feats, target_feats, return_all=return_all)

    def predict_flows(self, photo: Tensor, sketch: Tensor) -> tuple[Tensor, Tensor]:
        """Dense correspondences of photo-sketch pairs.

        Parameters
        ----------
        photo, sketch : Tensor [N, 3, H, W]
            RGB in [0, 1] (256 x 256 for the released models).

        Returns
        -------
        sketch_to_photo : Tensor [N, flow_size, flow_size, 2]
            On the sketch grid; where each sketch location lands in the photo (SPEC §5).
        photo_to_sketch : Tensor [N, flow_size, flow_size, 2]
            On the photo grid; where each photo location lands in the sketch.
        """
        photo_feats = self.encode(photo, PHOTO)
        sketch_feats = self.encode(sketch, SKETCH)
        return self.estimate(photo_feats, sketch_feats), self.estimate(sketch_feats, photo_feats)

    def forward(self, photo: Tensor, sketch: Tensor) -> tuple[Tensor, Tensor]:
        return self.predict_flows(photo, sketch)

    # ------------------------------------------------------------------ utilities
    def upsample_flow(self, flow: Tensor, size: int = 256) -> Tensor:
        """Bilinear (``align_corners=True``) upsampling of a flow [N, h, w, 2] to [N, size, size, 2]."""
        return F.interpolate(flow.permute(0, 3, 1, 2), (size, size), mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the query encoder and MoCo query head."""
        return list(self.encoder_q.parameters()) + list(self.framework.fc_q.parameters())


def build_model(arch: str = "resnet18", **overrides) -> PSCNet:
    """A randomly initialised PSCNet (``arch`` one of resnet18/34/50/101/152)."""
    return PSCNet(arch=arch, **overrides)

