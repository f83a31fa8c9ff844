"""Contact sheet of photo-sketch pairs with their keypoints and correspondence lines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations
from psc6k.images import read_image

#: 8 distinct keypoint colours (RGB), keypoint i -> colour i.
KEYPOINT_COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 200, 25], [0, 130, 200], [245, 130, 48],
                            [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def pair_panel(photo: np.ndarray, sketch: np.ndarray, photo_kps: np.ndarray, sketch_kps: np.ndarray,
               title: str = "", gap: int = 8) -> np.ndarray:
    """Photo | sketch side by side, keypoint i in colour i on both, joined by a line (RGB uint8)."""
    h = IMAGE_SIZE
    head = 18 if title else 0
    panel = np.full((h + head, 2 * h + gap, 3), 255, np.uint8)
    panel[head:, :h] = photo
    panel[head:, h + gap:] = sketch
    cv2.rectangle(panel, (h + gap, head), (2 * h + gap - 1, head + h - 1), (190, 190, 190), 1)
    if title:
        cv2.putText(panel, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (a, b) in enumerate(zip(photo_kps, sketch_kps)):
        col = tuple(int(c) for c in KEYPOINT_COLORS[i % len(KEYPOINT_COLORS)])
        pa = (int(round(a[0] * 16)), int(round((a[1] + head) * 16)))
        pb = (int(round((b[0] + h + gap) * 16)), int(round((b[1] + head) * 16)))
        cv2.line(panel, pa, pb, col, 1, cv2.LINE_AA, 4)
        for p in (pa, pb):
            cv2.circle(panel, p, 4 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
            cv2.circle(panel, p, 3 * 16, col, -1, cv2.LINE_AA, 4)
    return panel


def contact_sheet(root, out_png, *, n_pairs: int = 12, columns: int = 3, seed: int = 0,
                  annotations: str = "test_pairs_ps.csv") -> Path:
    """Write a PNG grid of ``n_pairs`` test pairs of the benchmark at ``root``.

    Pairs are spread over the categories (round-robin in the CSV's order); ``seed`` only rotates
    which pair of each category comes first.
    """
    root = Path(root)
    ann = read_annotations(root / annotations)
    by_cat: dict[str, list[int]] = {}
    for i, c in enumerate(ann.category):
        by_cat.setdefault(c, []).append(i)
    order, k = [], 0
    while len(order) < min(n_pairs, len(ann)):
        for c in sorted(by_cat):
            rows = by_cat[c]
            if k < len(rows):
                order.append(rows[(k + seed) % len(rows)])
        k += 1
    order = order[:n_pairs]
    panels = [pair_panel(read_image(root, ann.photo[i]), read_image(root, ann.sketch[i]), ann.photo_kps[i],
                         ann.sketch_kps[i], f"{ann.category[i]}  {Path(ann.sketch[i]).stem}") for i in order]
    if not panels:
        raise Psc6kError(f"{root / annotations}: no pairs to preview")
    ph, pw = panels[0].shape[:2]
    columns = max(1, min(columns, len(panels)))
    rows = (len(panels) + columns - 1) // columns
    pad = 12
    sheet = np.full((rows * (ph + pad) + pad, columns * (pw + pad) + pad, 3), 255, np.uint8)
    for j, p in enumerate(panels):
        r, c = divmod(j, columns)
        sheet[pad + r * (ph + pad): pad + r * (ph + pad) + ph, pad + c * (pw + pad): pad + c * (pw + pad) + pw] = p
    out_png = Path(out_png)
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(out_png), sheet[..., ::-1])
    except OSError as exc:
        raise Psc6kError(f"{out_png}: cannot write the preview ({exc})") from None
    if not ok:
        raise Psc6kError(f"{out_png}: cannot write the preview (use a .png path in a writable folder)")
    return out_png
