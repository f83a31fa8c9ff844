"""PyTorch datasets over PSC6K pairs, for porting a method to the benchmark (docs/port_your_method.md).

``PSC6KPairs`` walks the test pairs of ``test_pairs_ps.csv`` (or ``test_pairs_st.csv``) with their
keypoints; ``PSC6KTrainPairs`` walks the rows of ``train_pairs_ps.csv`` (each pair with ``flip``
0 and 1). Images come from :func:`model_zoo.data.load_image`, i.e. the toolkit's one reader
:func:`psc6k.images.read_image` (transparency over white, hostile files refused with one line).

Example::

    from torch.utils.data import DataLoader
    from model_zoo.datasets import PSC6KPairs

    pairs = PSC6KPairs("PSC6K/test_pairs_ps.csv", "Sketchy")
    for batch in DataLoader(pairs, batch_size=16):
        batch["photo"]             # float [16, 3, 256, 256] in 0...1
        batch["sketch_keypoints"]  # float [16, 8, 2], (x, y) pixels as in the CSV
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from model_zoo.data import load_image
from psc6k import IMAGE_SIZE
from psc6k.formats import read_annotations, read_train_pairs

__all__ = ["PSC6KPairs", "PSC6KTrainPairs"]


class PSC6KPairs(Dataset):
    """The annotated test pairs, one item per pair in file order.

    Parameters
    ----------
    annotations_csv : path-like
        ``test_pairs_ps.csv`` or ``test_pairs_st.csv`` (read by :func:`psc6k.formats.read_annotations`).
    images_root : path-like
        Sketchy root the CSV's paths are relative to.
    transform : callable, optional
        Applied to each item dict and returning one (so that images and keypoints can be
        transformed together).

    Items
    -----
    dict with ``photo``, ``sketch``: float32 ``[3, 256, 256]`` in 0...1; ``photo_keypoints``,
    ``sketch_keypoints``: float32 ``[8, 2]``, (x, y) pixels as in the CSV (XA, YA / XB, YB);
    ``category``: str; ``photo_path``, ``sketch_path``: the CSV's paths, relative to
    ``images_root`` (exactly what a submission names); ``index``: the row.
    """

    def __init__(self, annotations_csv, images_root, transform=None):
        self.annotations = read_annotations(annotations_csv)
        self.root = Path(images_root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, i: int) -> dict:
        ann = self.annotations
        ctx = f"pair {i + 1}: photo={ann.photo[i]!r}, sketch={ann.sketch[i]!r}"
        item = {"photo": load_image(self.root, ann.photo[i], IMAGE_SIZE, context=ctx),
                "sketch": load_image(self.root, ann.sketch[i], IMAGE_SIZE, context=ctx),
                "photo_keypoints": torch.from_numpy(ann.photo_kps[i].astype("float32")),
                "sketch_keypoints": torch.from_numpy(ann.sketch_kps[i].astype("float32")),
                "category": ann.category[i], "photo_path": ann.photo[i], "sketch_path": ann.sketch[i], "index": i}
        return self.transform(item) if self.transform is not None else item


class PSC6KTrainPairs(Dataset):
    """The training pairs, one item per row of ``train_pairs_ps.csv``: every pair with ``flip`` 0 and 1.

    Items
    -----
    dict with ``photo``, ``sketch``: float32 ``[3, 256, 256]`` in 0...1, both mirrored left-right
    when ``flip`` is 1 (as the authors' loader does); ``flip``: int; ``category``;
    ``photo_path``, ``sketch_path``; ``index``. ``transform`` as in :class:`PSC6KPairs`.
    """

    def __init__(self, train_csv, images_root, transform=None):
        pairs = read_train_pairs(train_csv)  # flips and directions folded into one entry per pair
        self.rows = [(p, s, c, flip) for p, s, c in zip(pairs.photo, pairs.sketch, pairs.category) for flip in (0, 1)]
        self.root = Path(images_root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        photo_rel, sketch_rel, category, flip = self.rows[i]
        ctx = f"training pair photo={photo_rel!r}, sketch={sketch_rel!r}"
        photo = load_image(self.root, photo_rel, IMAGE_SIZE, context=ctx)
        sketch = load_image(self.root, sketch_rel, IMAGE_SIZE, context=ctx)
        if flip:
            photo, sketch = photo.flip(-1), sketch.flip(-1)
        item = {"photo": photo, "sketch": sketch, "flip": flip, "category": category,
                "photo_path": photo_rel, "sketch_path": sketch_rel, "index": i}
        return self.transform(item) if self.transform is not None else item
