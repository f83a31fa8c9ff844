"""Port your method to PSC6K, end to end (docs/port_your_method.md).

1. load the pairs with ``model_zoo.datasets.PSC6KPairs``;
2. predict flows (here a toy method: map the object's bounding box in one image onto the other's);
3. write a submission (``psc6k.submission``);
4. run the doctor (``psc6k.doctor``): would a convention fix raise the score?
5. evaluate (``psc6k.pck.evaluate``), exactly as ``psc6k eval`` does.

Runs on the bundled sample by default::

    python examples/port_your_method.py --out /tmp/port
    python examples/port_your_method.py --annotations PSC6K/test_pairs_ps.csv --images Sketchy --out runs/mine
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from model_zoo.datasets import PSC6KPairs
from psc6k.data import sample_path
from psc6k.doctor import diagnose, format_diagnosis
from psc6k.pck import evaluate, format_table
from psc6k.submission import Submission, save_submission

FLOW_SIDE = 16  # any H x W works: the scorer upsamples bilinearly (align_corners=True) to 256 x 256


def object_box(images: torch.Tensor) -> np.ndarray:
    """Bounding box ``[B, 4]`` (x0, y0, x1, y1), pixels, of the non-white pixels of ``[B, 3, 256, 256]`` images."""
    ink = (images.min(dim=1).values < 0.9).numpy()
    boxes = []
    for mask in ink:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()] if xs.size else [0, 0, 255, 255])
    return np.asarray(boxes, dtype=np.float64)


def box_flow(source_box: np.ndarray, target_box: np.ndarray, side: int = FLOW_SIDE) -> np.ndarray:
    """Flows ``[B, side, side, 2]`` in the SPEC §5 convention: on the source grid, entry ``[i, j]``
    is where source pixel (row i, col j) lands in the target, as normalised (u, v) with
    ``align_corners=True`` — the source box mapped linearly onto the target box."""
    pixels = np.linspace(0, 255, side)  # the source pixel of each grid column / row
    out = np.empty((len(source_box), side, side, 2))
    for b, (s, t) in enumerate(zip(source_box, target_box)):
        x = t[0] + (pixels - s[0]) * (t[2] - t[0]) / max(s[2] - s[0], 1.0)
        y = t[1] + (pixels - s[1]) * (t[3] - t[1]) / max(s[3] - s[1], 1.0)
        out[b, :, :, 0] = x[None, :] * 2 / 255 - 1  # u varies along columns (x) ...
        out[b, :, :, 1] = y[:, None] * 2 / 255 - 1  # ... v along rows (y)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", default=str(sample_path() / "test_pairs_ps.csv"))
    parser.add_argument("--images", default=str(sample_path()))
    parser.add_argument("--out", default="port_your_method")
    args = parser.parse_args(argv)

    # 1. the pairs
    pairs = PSC6KPairs(args.annotations, args.images)
    photos, sketches, s2p, p2s = [], [], [], []
    for batch in DataLoader(pairs, batch_size=16):
        # 2. your method: here, bounding boxes of the ink / object
        photo_box, sketch_box = object_box(batch["photo"]), object_box(batch["sketch"])
        s2p.append(box_flow(sketch_box, photo_box))  # on the sketch grid, pointing into the photo
        p2s.append(box_flow(photo_box, sketch_box))
        photos += list(batch["photo_path"])
        sketches += list(batch["sketch_path"])

    # 3. the submission: paths exactly as in the CSV, float32 flows [N, H, W, 2]
    sub = Submission("bounding-box", "flow", photos, sketches, np.concatenate(s2p).astype(np.float32),
                     np.concatenate(p2s).astype(np.float32))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_submission(sub, out / "submission.npz")
    print(f"wrote {path} ({len(sub)} pairs)")

    # 4. the doctor: a fix gaining more than 5 points means a convention mistake, not the method
    print("\n# psc6k doctor")
    print(format_diagnosis(diagnose(pairs.annotations, sub)))

    # 5. the score, as `psc6k eval submission.npz --annotations ...` prints it
    print("\n# psc6k eval")
    print(format_table(evaluate(pairs.annotations, sub), categories=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
