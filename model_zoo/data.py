"""Image loading for PSCNet: photo-sketch pairs of a Sketchy-shaped tree as float tensors.

Paths come from the PSC6K CSVs (read by :mod:`psc6k.formats`) and are relative to the Sketchy
root. Images are RGB in [0, 1], [3, S, S] with S = ``image_size`` (256 for the released models;
other sizes are resized bilinearly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from psc6k.errors import FormatError, Psc6kError
from psc6k.images import read_image

__all__ = ["ImageError", "load_image", "PairDataset", "PhotoEpochDataset", "unwrap_worker_error"]


class ImageError(Psc6kError):
    """An image named by a CSV is missing or unreadable."""


def load_image(root, relpath: str, image_size: int = 256, *, context: str = "") -> torch.Tensor:
    """Read ``root/relpath`` as RGB float [3, image_size, image_size] in [0, 1].

    Pixels come from :func:`psc6k.images.read_image` (the toolkit's one reader: transparency over
    white, hostile files refused with one line); images of another side are then resized
    bilinearly to ``image_size`` -- a model input size, not a keypoint convention (predicted
    flows are normalised coordinates).
    """
    where = f" ({context})" if context else ""
    try:
        array = read_image(root, relpath, "rgb", size=None)
    except FormatError as exc:
        raise ImageError(f"{exc}{where}") from None
    if array.shape[:2] != (image_size, image_size):
        array = np.asarray(Image.fromarray(array).resize((image_size, image_size), Image.BILINEAR))
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)  # own, writable copy


class PairDataset(Dataset):
    """The (photo, sketch) pairs of an annotation set, for prediction.

    Items are ``(index, photo [3,S,S], sketch [3,S,S])`` in annotation order.
    """

    def __init__(self, photos, sketches, root, image_size: int = 256):
        if len(photos) != len(sketches):
            raise ValueError("photos and sketches differ in length")
        self.photos, self.sketches = list(photos), list(sketches)
        self.root, self.image_size = Path(root), image_size

    def __len__(self) -> int:
        return len(self.photos)

    def check_files(self) -> None:
        """Raise :class:`ImageError` naming the first pair whose photo or sketch file is missing."""
        for i, (p, s) in enumerate(zip(self.photos, self.sketches)):
            for rel in (p, s):
                if not (self.root / rel).is_file():
                    raise ImageError(f"image {rel!r} (pair {i + 1}: photo={p!r}, sketch={s!r}) not found under "
                                     f"{str(self.root)!r} (looked for {str(self.root / rel)!r})")

    def __getitem__(self, i: int):
        ctx = f"pair {i + 1}: photo={self.photos[i]!r}, sketch={self.sketches[i]!r}"
        return (i, load_image(self.root, self.photos[i], self.image_size, context=ctx),
                load_image(self.root, self.sketches[i], self.image_size, context=ctx))


class PhotoEpochDataset(Dataset):
    """One item per training photo (paper §4; their ``PhotoSketchDataset`` in ``train`` mode).

    Item ``i`` is photo ``i`` (in order of first appearance) with one of its sketches drawn at
    random, both mirrored with probability 1/2 (their CSV lists every pair with flip 0 and 1 and
    they sample one row). With ``mix_within_class`` (``--supervision class``) the sketch is drawn
    from a random photo of the same category instead. Randomness comes from torch's generator,
    which the DataLoader seeds per worker and per epoch.
    """

    def __init__(self, pairs, root, image_size: int = 256, mix_within_class: bool = False):
        self.root, self.image_size, self.mix = Path(root), image_size, mix_within_class
        by_photo: dict[str, list[str]] = {}
        cls: dict[str, int] = {}
        for p, s, c in zip(pairs.photo, pairs.sketch, list(pairs.cls)):
            by_photo.setdefault(p, []).append(s)
            cls.setdefault(p, int(c))
        self.photos = list(by_photo)
        self.sketches = [by_photo[p] for p in self.photos]
        self.cls = [cls[p] for p in self.photos]
        members: dict[int, list[int]] = {}
        for i, c in enumerate(self.cls):
            members.setdefault(c, []).append(i)
        self.same_class = [members[c] for c in self.cls]

    def __len__(self) -> int:
        return len(self.photos)

    def check_files(self) -> None:
        """Raise :class:`ImageError` naming the first missing photo or sketch file."""
        for p, sketches in zip(self.photos, self.sketches):
            for rel in (p, *sketches):
                if not (self.root / rel).is_file():
                    raise ImageError(f"image {rel!r} (train photo {p!r}) not found under {str(self.root)!r}")

    def _pick(self, options):
        return options[int(torch.randint(len(options), ()))]

    def __getitem__(self, i: int):
        j = self._pick(self.same_class[i]) if self.mix else i
        sketch_rel = self._pick(self.sketches[j])
        ctx = f"train photo {self.photos[i]!r}"
        photo = load_image(self.root, self.photos[i], self.image_size, context=ctx)
        sketch = load_image(self.root, sketch_rel, self.image_size, context=ctx)
        if int(torch.randint(2, ())):
            photo, sketch = photo.flip(-1), sketch.flip(-1)
        return photo, sketch


def unwrap_worker_error(exc: ImageError) -> ImageError:
    """An :class:`ImageError` raised in a DataLoader worker comes back with the worker's traceback
    in its message; keep only the original message (the CLI prints no tracebacks)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    prefix = "ImageError: "
    if prefix in last:
        last = last.split(prefix, 1)[1]
    return ImageError(last)
