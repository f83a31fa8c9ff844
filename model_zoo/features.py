"""Zero-shot correspondences from any dense feature extractor (``psc6k predict --features``).

An *extractor* is a callable ``extractor(images, domain) -> features`` with

- ``images``: float tensor ``[N, 3, H, W]``, RGB in [0, 1] (not normalised; an extractor applies
  its own normalisation),
- ``domain``: ``"photo"`` or ``"sketch"`` (extractors that treat both alike ignore it),
- ``features``: float tensor ``[N, C, h, w]`` laid over the whole image (cell ``k`` of a row
  covers pixels ``[k * W / w, (k + 1) * W / w)``, the geometry of a strided CNN or a ViT's patch
  grid).

:func:`load_extractor` builds one from a spec: ``MODULE:CALLABLE`` (``MODULE`` may also be a
``.py`` file), ``pscnet`` (the encoder of a PSCNet checkpoint, the layers its warp estimator
correlates, each resized to its feature size and L2-normalised, concatenated) or
``timm:MODEL_NAME`` (a timm backbone with weights from a local file; never downloads).

:func:`match_flow` turns source and target features into a flow in the SPEC §5 convention on
the source grid: each source grid point (``align_corners=True`` geometry: point ``j`` of ``w``
sits at pixel ``j * (S - 1) / (w - 1)``) reads the source features there (bilinear, in the
cell-centre geometry above), finds its cosine nearest neighbour among the target cells and
writes that cell's centre, in normalised coordinates. Options: a mutual nearest-neighbour check
(non-mutual points take the displacement of the nearest mutual point), a windowed soft-argmax,
and matching on finer grids (features bilinearly upsampled).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model_zoo.checkpoint import load_checkpoint
from model_zoo.data import PairDataset
from model_zoo.predict import iter_pair_batches, resolve_device
from model_zoo.pscnet import PHOTO, SKETCH
from psc6k import IMAGE_SIZE
from psc6k.errors import Psc6kError
from psc6k.submission import Submission

__all__ = ["DOMAINS", "MatchOptions", "load_extractor", "call_extractor", "match_flow", "cell_centres_px",
           "grid_points_px", "PSCNetFeatures", "TimmFeatures", "predict_features_submission"]

DOMAINS = ("photo", "sketch")
Extractor = Callable[[Tensor, str], Tensor]


# --------------------------------------------------------------------------- geometry
def grid_points_px(n: int, image_size: int) -> Tensor:
    """Pixel positions of the ``n`` points of a flow grid side (``align_corners=True``)."""
    return torch.arange(n, dtype=torch.float64) * ((image_size - 1) / (n - 1))


def cell_centres_px(n: int, image_size: int) -> Tensor:
    """Pixel centres of the ``n`` cells of a feature-map side covering the image (``align_corners=False``)."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) * (image_size / n) - 0.5


def _to_flow_coords(px: Tensor, image_size: int) -> Tensor:
    """Pixels -> SPEC §5 normalised coordinates, the inverse of ``psc6k.pck.flow_to_pixels``."""
    return px * (2.0 / (image_size - 1)) - 1.0


@dataclass(frozen=True)
class MatchOptions:
    """How features become flows.

    Attributes
    ----------
    size : int or None
        Side of the flow grid and of the target candidate grid; None: the feature resolution.
    mutual : bool
        Keep only mutual nearest neighbours (the target's best source lies within one grid step);
        the others take the displacement of the nearest kept point.
    soft_argmax : bool
        Softmax-weighted mean of the candidate centres within ``window`` cells of the best one.
    temperature : float
        Softmax temperature on cosine similarities.
    window : int
        Half-width of the soft-argmax window, in candidate cells.
    """

    size: int | None = None
    mutual: bool = False
    soft_argmax: bool = False
    temperature: float = 0.05
    window: int = 2

    def check(self) -> "MatchOptions":
        if self.size is not None and self.size < 2:
            raise Psc6kError(f"match size must be >= 2, got {self.size}")
        if not self.temperature > 0:
            raise Psc6kError(f"temperature must be > 0, got {self.temperature}")
        if self.window < 0:
            raise Psc6kError(f"window must be >= 0, got {self.window}")
        return self


def match_flow(source: Tensor, target: Tensor, *, image_size: int = 256,
               options: MatchOptions = MatchOptions()) -> Tensor:
    """Flow from source to target by cosine nearest neighbours of dense features.

    Parameters
    ----------
    source, target : Tensor [N, C, h, w] and [N, C, h', w']
        Features of the source and target images (any resolutions >= 2, same C).
    image_size : int
        Side S of the (square) images the features cover, in pixels.
    options : MatchOptions

    Returns
    -------
    Tensor float32 [N, H, W, 2]
        On the source grid (``H, W = options.size`` or ``h, w``), normalised (u, v) of the matched
        target location (SPEC §5, ``align_corners=True``).

    Examples
    --------
    >>> pos = torch.stack(torch.meshgrid(torch.arange(4.), torch.arange(4.), indexing="ij"))[None]
    >>> feats = torch.cat([torch.cos(pos), torch.sin(pos)], 1)  # distinct direction per cell
    >>> flow = match_flow(feats, feats, image_size=4)
    >>> torch.allclose(flow[0, :, :, 0], torch.linspace(-1, 1, 4).expand(4, 4))
    True
    """
    options = options.check()
    if source.ndim != 4 or target.ndim != 4 or source.shape[:2] != target.shape[:2]:
        raise Psc6kError(f"features must be [N, C, h, w] with the same N and C, got {list(source.shape)} and "
                         f"{list(target.shape)}")
    n, _, h, w = source.shape
    source, target = source.float(), target.float()
    if options.size is not None:
        h = w = options.size
        if target.shape[-2:] != (h, w):
            target = F.interpolate(target, (h, w), mode="bilinear", align_corners=False)
    ht, wt = target.shape[-2:]
    # source features at the flow-grid points (align_corners=False sampling of the cell geometry)
    gy = (2 * grid_points_px(h, image_size) + 1) / image_size - 1
    gx = (2 * grid_points_px(w, image_size) + 1) / image_size - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).to(source)  # [h, w, 2] as (x, y)
    query = F.grid_sample(source, grid.expand(n, h, w, 2), mode="bilinear", padding_mode="border",
                          align_corners=False)
    q = F.normalize(query.flatten(2), dim=1)           # [N, C, Q]
    t = F.normalize(target.flatten(2), dim=1)          # [N, C, T]
    cy, cx = cell_centres_px(ht, image_size), cell_centres_px(wt, image_size)
    cand = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1).reshape(-1, 2).to(source)  # [T, 2] (x, y)
    flows = []
    for i in range(n):  # one pair at a time: the similarity matrix is Q x T
        sim = q[i].T @ t[i]                                # [Q, T]
        best = sim.argmax(dim=1)                           # [Q]
        if options.soft_argmax:
            by, bx = best // wt, best % wt
            ty, tx = torch.arange(ht, device=sim.device), torch.arange(wt, device=sim.device)
            inside = ((ty[None, :, None] - by[:, None, None]).abs() <= options.window) & \
                     ((tx[None, None, :] - bx[:, None, None]).abs() <= options.window)
            logits = (sim / options.temperature).masked_fill(~inside.reshape(len(best), -1), float("-inf"))
            px = torch.softmax(logits, dim=1) @ cand           # [Q, 2]
        else:
            px = cand[best]
        if options.mutual:
            px = _mutual_fill(sim, best, px, h, w, image_size)
        flows.append(px.reshape(h, w, 2))
    return _to_flow_coords(torch.stack(flows), image_size).float()


def _mutual_fill(sim: Tensor, best: Tensor, px: Tensor, h: int, w: int, image_size: int) -> Tensor:
    """Replace non-mutual matches by the displacement of the nearest mutual grid point."""
    from scipy import ndimage

    back = sim.argmax(dim=0)[best]                        # best source of each query's target
    qy, qx = torch.arange(h * w, device=sim.device) // w, torch.arange(h * w, device=sim.device) % w
    mutual = ((back // w - qy).abs() <= 1) & ((back % w - qx).abs() <= 1)
    if bool(mutual.all()) or not bool(mutual.any()):
        return px
    src = torch.stack(torch.meshgrid(grid_points_px(w, image_size), grid_points_px(h, image_size), indexing="xy"),
                      dim=-1).reshape(-1, 2).to(px)
    disp = (px - src).reshape(h, w, 2)
    bad = (~mutual).reshape(h, w).cpu().numpy()
    _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
    filled = disp[torch.from_numpy(iy).to(sim.device), torch.from_numpy(ix).to(sim.device)]
    # a borrowed displacement may point off the image; matches never do
    return (src.reshape(h, w, 2) + filled).reshape(-1, 2).clamp(0, image_size - 1)


# --------------------------------------------------------------------------- extractors
class PSCNetFeatures(torch.nn.Module):
    """The encoder of a PSCNet as an extractor: the layers the warp estimator correlates
    (``config.corr_layers``, layer2 and layer3 in the released models), each resized to
    ``config.feat_size`` (bilinear, ``align_corners=False``, as the estimator does), L2-normalised
    per layer and concatenated. ``domain`` picks the conditional-BatchNorm copy."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    @torch.inference_mode()
    def forward(self, images: Tensor, domain: str) -> Tensor:
        feats = self.model.encode(images, PHOTO if domain == "photo" else SKETCH)
        size = self.model.config.feat_size
        parts = [F.normalize(F.interpolate(feats[f"layer{k}"].float(), (size, size), mode="bilinear",
                                           align_corners=False), dim=1)
                 for k in self.model.config.corr_layers]
        return torch.cat(parts, dim=1)


class TimmFeatures(torch.nn.Module):
    """A timm backbone (ViT / DINOv2 / ConvNeXt / ResNet ...) with weights from a local file.

    ``forward_intermediates`` gives spatial maps ``[N, C, h, w]`` for ViTs and CNNs alike;
    ``layer`` picks one (default: the last). Images are resized to ``input_size`` (rounded to a
    multiple of the patch size for ViTs) and normalised with the model's own mean / std.
    """

    def __init__(self, name: str, weights, *, layer: int = -1, input_size: int | None = None):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise Psc6kError("`features` timm:... needs the timm package: pip install 'psc6k[timm]'", param="features") from None
        if weights is None:
            raise Psc6kError(f"`features` timm:{name} needs `weights` FILE (a local state dict; psc6k never "
                             "downloads weights)", param=("features", "weights"))
        path = Path(weights)
        if not path.is_file():
            raise Psc6kError(f"`weights` {weights}: file not found", param="weights")
        try:
            model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
        except TypeError:  # CNNs take no dynamic_img_size
            model = timm.create_model(name, pretrained=False, num_classes=0)
        except RuntimeError as exc:
            raise Psc6kError(f"timm does not know model {name!r} ({exc})") from None
        state = _read_state_dict(path)
        # timm converts original checkpoints (e.g. Meta's DINOv2 files) with the filter its model
        # module defines for pretrained weights; apply it when there is one
        convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                state = convert(state, model)
            except Exception:  # a state dict already in timm's layout may not need (or survive) it
                pass
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("head.", "fc.", "classifier."))]
        if missing:
            raise Psc6kError(f"`weights` {weights}: not weights of {name} ({len(missing)} missing keys, e.g. "
                             f"{missing[:3]})", param="weights")
        self.model = model.eval()
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else None
        self.layer, self.input_size = layer, input_size

    @torch.inference_mode()
    def forward(self, images: Tensor, domain: str) -> Tensor:
        size = self.input_size or images.shape[-1]
        if self.patch:
            size = max(self.patch, round(size / self.patch) * self.patch)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        x = (images - self.mean) / self.std
        feats = self.model.forward_intermediates(x, indices=[self.layer], intermediates_only=True)
        return feats[-1]


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Psc6kError(f"`weights` {path}: not a readable torch state dict ({exc})", param="weights") from None
    for key in ("state_dict", "model", "teacher"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise Psc6kError(f"`weights` {path}: expected a state dict, got {type(obj).__name__}", param="weights")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in obj.items()}


def _import_callable(spec: str) -> Extractor:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise Psc6kError(f"`features` {spec!r}: expected MODULE:CALLABLE, pscnet or timm:MODEL_NAME", param="features")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise Psc6kError(f"`features` {spec!r}: file {module_name} not found", param="features")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault(path.stem, module)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Psc6kError(f"`features` {spec!r}: cannot import {module_name!r} ({exc})", param="features") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise Psc6kError(f"`features` {spec!r}: {module_name!r} has no attribute {attr!r}", param="features")
    if not callable(fn):
        raise Psc6kError(f"`features` {spec!r}: {attr!r} is not callable", param="features")
    return fn


def load_extractor(spec: str, *, checkpoint=None, weights=None, trusted: bool = False, layer: int = -1,
                   input_size: int | None = None) -> Extractor:
    """An extractor from ``MODULE:CALLABLE``, ``pscnet`` (needs ``checkpoint``) or ``timm:NAME`` (needs ``weights``)."""
    if spec == "pscnet":
        if checkpoint is None:
            raise Psc6kError("`features` pscnet needs `checkpoint` (a PSCNet checkpoint)", param=("features", "checkpoint"))

        return PSCNetFeatures(load_checkpoint(checkpoint, map_location="cpu", trusted=trusted))
    if spec.startswith("timm:"):
        return TimmFeatures(spec[len("timm:"):], weights, layer=layer, input_size=input_size)
    return _import_callable(spec)


def call_extractor(extractor: Extractor, images: Tensor, domain: str, spec: str = "extractor") -> Tensor:
    """Run an extractor and check what it returns (one clear error naming the spec)."""
    with torch.inference_mode():
        out = extractor(images, domain)
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(out)
    if not isinstance(out, Tensor):
        raise Psc6kError(f"`features` {spec}: returned {type(out).__name__}, expected a tensor [N, C, h, w]", param="features")
    if out.ndim != 4 or out.shape[0] != images.shape[0] or min(out.shape[-2:]) < 2:
        raise Psc6kError(f"`features` {spec}: returned shape {list(out.shape)} for {images.shape[0]} {domain} "
                         "images; expected [N, C, h, w] with h, w >= 2", param="features")
    if not out.is_floating_point():
        out = out.float()
    if not bool(torch.isfinite(out).all()):
        raise Psc6kError(f"`features` {spec}: returned NaN or infinite values for {domain} images", param="features")
    return out


def predict_features_submission(extractor: Extractor, photos, sketches, images_root, *, spec: str = "features",
                                device="cpu", batch_size: int = 16, num_workers: int = 0, image_size: int = 256,
                                options: MatchOptions = MatchOptions(), method: str = "features",
                                progress: bool = True) -> Submission:
    """Both flows of every pair by feature matching; a flow :class:`Submission` (float32)."""
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise Psc6kError(f"batch size must be >= 1, got {batch_size}")
    options = options.check()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if isinstance(extractor, torch.nn.Module):
        extractor = extractor.to(device)
    dataset = PairDataset(photos, sketches, images_root, image_size)
    dataset.check_files()
    n = len(dataset)
    if n == 0:
        raise Psc6kError("no pairs to predict")
    s2p = p2s = None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for idx, photo, sketch in iter_pair_batches(loader, progress, n):
        fp = call_extractor(extractor, photo.to(device), "photo", spec)
        fs = call_extractor(extractor, sketch.to(device), "sketch", spec)
        if fp.shape[1] != fs.shape[1]:
            raise Psc6kError(f"`features` {spec}: {fp.shape[1]} photo channels but {fs.shape[1]} sketch channels", param="features")
        # geometry of the 256 px images the flows are scored on, whatever size the extractor saw
        a = match_flow(fs, fp, image_size=IMAGE_SIZE, options=options).cpu().numpy()
        b = match_flow(fp, fs, image_size=IMAGE_SIZE, options=options).cpu().numpy()
        if s2p is None:
            s2p = np.empty((n, *a.shape[1:]), np.float32)
            p2s = np.empty((n, *b.shape[1:]), np.float32)
        if a.shape[1:] != s2p.shape[1:] or b.shape[1:] != p2s.shape[1:]:
            raise Psc6kError(f"`features` {spec}: feature size changed between batches; use `match_size`", param=("features", "match_size"))
        s2p[np.asarray(idx)], p2s[np.asarray(idx)] = a, b
    if p2s is not None and p2s.shape != s2p.shape:
        raise Psc6kError(f"`features` {spec}: photo and sketch features differ in size "
                         f"({list(p2s.shape[1:3])} vs {list(s2p.shape[1:3])}); use `match_size` to match on one grid", param=("features", "match_size"))
    return Submission(method=method, kind="flow", photo=list(photos), sketch=list(sketches),
                      sketch_to_photo=s2p, photo_to_sketch=p2s)
