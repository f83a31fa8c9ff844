"""COCO-keypoints export of aggregated PSC6K annotations."""

from __future__ import annotations

import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS, __version__
from psc6k.formats import Annotations
from psc6k.sketchy import image_id


def _flat(kps: np.ndarray) -> list:
    out = []
    for x, y in kps:
        out += [float(x), float(y), 2]  # v = 2: labelled and visible
    return out


def to_coco(ann: Annotations, report: dict | None = None) -> dict:
    """COCO-keypoints JSON of the photo keypoints, one annotation per (photo, sketch) pair.

    Coordinates stay in the PSC6K convention (pixels, origin at the centre of the top-left
    pixel). Each annotation also carries its ``sketch`` path and ``sketch_keypoints`` (same
    layout) so the pair can be rebuilt. ``category_id`` is the PSC6K ``class``.
    """
    images, index = [], {}
    for p in ann.photo:
        if p not in index:
            index[p] = len(images) + 1
            images.append({"id": index[p], "file_name": p, "photo_id": image_id(p),
                           "width": IMAGE_SIZE, "height": IMAGE_SIZE})
    names = [f"kp{k}" for k in range(NUM_KEYPOINTS)]
    used = sorted({int(c) for c in ann.cls})
    categories = [{"id": c, "name": ann.categories[c - 1], "supercategory": "sketchy",
                   "keypoints": names, "skeleton": []} for c in used]
    annotations = []
    for i in range(len(ann)):
        kps = ann.photo_kps[i]
        x0, y0 = kps.min(axis=0)
        x1, y1 = kps.max(axis=0)
        annotations.append({"id": i + 1, "image_id": index[ann.photo[i]], "category_id": int(ann.cls[i]),
                            "keypoints": _flat(kps), "num_keypoints": NUM_KEYPOINTS,
                            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                            "sketch": ann.sketch[i], "sketch_keypoints": _flat(ann.sketch_kps[i])})
    return {"info": {"description": "PSC6K keypoints aggregated from crowd clicks (3-sigma rule)",
                     "version": __version__, "coordinates": "pixels, origin at the centre of the top-left pixel",
                     "aggregation": report or {}},
            "images": images, "annotations": annotations, "categories": categories, "licenses": []}
