"""Train/test leakage: photos or sketches of a test list that a training list also holds.

Both lists may be any PSC6K CSV (SPEC §3: test or train pairs, ``ps`` or ``st`` layout, or a
``photo,sketch`` pair list), a Sketchy id list (``info/testset.txt`` style: one id a line, with or
without category prefix or extension), or a folder of images (searched recursively). Images are
compared by Sketchy id (file name without extension): a sketch id is ``<photo id>-<n>``, anything
else is a photo.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from psc6k.errors import FormatError
from psc6k.formats import (PS_TEST_COLUMNS, PS_TRAIN_COLUMNS, ST_TEST_COLUMNS, ST_TRAIN_COLUMNS, read_annotations,
                           read_pair_list, read_train_pairs)
from psc6k.inputs import check_input_file
from psc6k.sketchy import image_id, read_id_list

#: Image files a folder list is made of.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: A folder holding more images than this is refused (a wrong path, e.g. a whole disk).
MAX_FOLDER_FILES = 2_000_000
_SKETCH_ID = re.compile(r"-\d+$")


def is_sketch_id(ident: str) -> bool:
    """Sketchy sketch ids end in ``-<n>`` (``n02691156_10151-3``).

    >>> is_sketch_id("n02691156_10151-3"), is_sketch_id("n02691156_10151")
    (True, False)
    """
    return bool(_SKETCH_ID.search(ident))


@dataclass
class ImageSet:
    """Photo and sketch ids of one list, and what it was read as."""

    source: str
    kind: str
    photos: set = field(default_factory=set)
    sketches: set = field(default_factory=set)

    def add(self, ident: str) -> None:
        (self.sketches if is_sketch_id(ident) else self.photos).add(ident)


def _csv_header(path: Path) -> tuple | None:
    """The header of a CSV file as a tuple of names, or None when the first line is no CSV header."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        first = fh.readline(64 * 1024).strip()
    if "," not in first:
        return None
    return tuple(h.strip() for h in first.split(","))


def read_image_set(path) -> ImageSet:
    """Photo and sketch ids of a PSC6K CSV, a Sketchy id list or a folder of images.

    Raises
    ------
    FormatError
        Missing path, unreadable or malformed file (one line naming file / row), an empty list.
    """
    path = Path(path)
    if path.is_dir():
        out = ImageSet(str(path), "folder of images")
        count = 0
        for dirpath, _, files in os.walk(path):
            for name in files:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    count += 1
                    if count > MAX_FOLDER_FILES:
                        raise FormatError(f"more than {MAX_FOLDER_FILES} images under this folder; "
                                          "expected a Sketchy image folder", file=path)
                    out.add(image_id(name))
        if not out.photos and not out.sketches:
            raise FormatError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) under this folder", file=path)
        return out
    check_input_file(path, what="a PSC6K CSV, a Sketchy id list or a folder of images")
    header = _csv_header(path)
    if header in (PS_TEST_COLUMNS, ST_TEST_COLUMNS):
        ann = read_annotations(path)
        photos, sketches, kind = ann.photo, ann.sketch, "PSC6K test pairs"
    elif header in (PS_TRAIN_COLUMNS, ST_TRAIN_COLUMNS):
        pairs = read_train_pairs(path)
        photos, sketches, kind = pairs.photo, pairs.sketch, "PSC6K training pairs"
    elif header is not None:
        pairs = read_pair_list(path)
        photos, sketches, kind = pairs.photo, pairs.sketch, "photo,sketch pair list"
    else:
        out = ImageSet(str(path), "Sketchy id list")
        for ident in read_id_list(path):
            out.add(ident)
        if not out.photos and not out.sketches:
            raise FormatError("no id in this list", file=path)
        return out
    return ImageSet(str(path), kind, {image_id(p) for p in photos}, {image_id(s) for s in sketches})


@dataclass
class SplitCheck:
    """Test images found in the training list (sorted ids)."""

    train: ImageSet
    test: ImageSet
    photos: list
    sketches: list

    @property
    def ok(self) -> bool:
        return not self.photos and not self.sketches

    def to_dict(self, first: int = 20) -> dict:
        return {"ok": self.ok, "train": self.train.source, "train_kind": self.train.kind,
                "test": self.test.source, "test_kind": self.test.kind,
                "n_test_photos": len(self.test.photos), "n_test_sketches": len(self.test.sketches),
                "photos": {"count": len(self.photos), "first": self.photos[:first]},
                "sketches": {"count": len(self.sketches), "first": self.sketches[:first]}}

    def message(self, first: int = 5) -> str:
        """One line: clean, or the overlap counts with the first few ids."""
        if self.ok:
            return (f"clean: none of the {len(self.test.photos)} photos and {len(self.test.sketches)} sketches of "
                    f"{self.test.source} is in {self.train.source}")
        parts = []
        for what, ids in (("photos", self.photos), ("sketches", self.sketches)):
            if ids:
                more = f" and {len(ids) - first} more" if len(ids) > first else ""
                parts.append(f"{len(ids)} test {what} ({', '.join(ids[:first])}{more})")
        return f"{' and '.join(parts)} of {self.test.source} are in the training list {self.train.source}"


def check_split(train, test) -> SplitCheck:
    """Photos and sketches of ``test`` that ``train`` also holds (paths or :class:`ImageSet`)."""
    train = train if isinstance(train, ImageSet) else read_image_set(train)
    test = test if isinstance(test, ImageSet) else read_image_set(test)
    return SplitCheck(train, test, sorted(test.photos & train.photos), sorted(test.sketches & train.sketches))
