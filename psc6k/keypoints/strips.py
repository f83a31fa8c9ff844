"""The ``--viz`` picture of one sketch: the paper's Fig. 7 strip
sketch | mask | pseudo-parts | keypoints, and where it is written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from psc6k.keypoints._morphology import fill_holes
from psc6k.keypoints.pipeline import KeypointResult

__all__ = ["DILATED_RGB", "SET_ASIDE_RGB", "render_strip", "viz_path"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
#: --viz colours (RGB): ink set aside (dust, stray marks) and mask grown by the dilations.
SET_ASIDE_RGB = (230, 0, 0)
DILATED_RGB = (120, 170, 255)


def render_strip(res: KeypointResult) -> np.ndarray:
    """Paper Fig. 7 strip, RGB uint8 [H, 4W + 3 gaps]: sketch | mask | pseudo-parts | keypoints.

    Colour code: in the sketch panel the ink set aside (dust, stray marks) is red; in the mask
    panel the object's ink is black, the filled outline dark grey and what the dilations added
    light blue.
    """
    h, w = res.gray.shape
    sketch = np.repeat((res.gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if res.set_aside is not None and res.set_aside.any():
        sketch[res.set_aside] = SET_ASIDE_RGB
    mask = np.full((h, w, 3), 255, np.uint8)
    mask[res.mask] = (70, 70, 70)
    if res.dilation_iterations:
        mask[res.mask & ~fill_holes(res.ink)] = DILATED_RGB
    mask[res.ink] = (0, 0, 0)
    palette = np.array([_PALETTE[i % len(_PALETTE)] for i in range(max(int(res.parts.max()) + 1, 1))], np.uint8)
    parts = np.full((h, w, 3), 255, np.uint8)
    inside = res.parts >= 0
    parts[inside] = palette[res.parts[inside]]
    kps = np.repeat((res.gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    kps[res.mask & ~res.ink] = (kps[res.mask & ~res.ink] * 0.85).astype(np.uint8)
    radius = max(2, int(round(max(h, w) / 64)))
    for i, (x, y) in enumerate(res.keypoints):
        c = tuple(int(v) for v in palette[i % len(palette)])
        center = (int(round(x)), int(round(y)))
        cv2.circle(kps, center, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(kps, center, radius, c, -1, cv2.LINE_AA)
        cv2.putText(kps, str(i), (center[0] + radius + 1, center[1] - radius), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.3, h / 640), (0, 0, 0), 1, cv2.LINE_AA)
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([sketch, gap, mask, gap, parts, gap, kps], axis=1)


def viz_path(viz_dir: Path, key: str) -> Path:
    """Where the strip of sketch ``key`` goes under ``viz_dir``: ``key`` as a relative path
    (``..`` and ``.`` dropped, so it stays inside), suffix ``.png``."""
    rel = Path(key.replace("\\", "/").lstrip("/"))
    rel = Path(*[p for p in rel.parts if p not in ("..", ".")])
    return viz_dir / rel.with_suffix(".png")
