"""Which sketches a keypoint batch processes: a folder of images, or a pair / keypoints CSV.

Each sketch is a ``(key, path)``: ``key`` is what the keypoints CSV names it by (relative to the
Sketchy root where one is known), ``path`` where the image is read from.
"""

from __future__ import annotations

import csv
from pathlib import Path

from psc6k import formats
from psc6k.errors import ParameterError, Psc6kError
from psc6k.inputs import check_input_file
from psc6k.keypoints.io import refuse_photo_folder
from psc6k.sketchy import recorded_sketchy_root

__all__ = ["IMAGE_EXTENSIONS", "SKETCHY_MARKER", "collect", "collect_from_csv", "collect_from_directory"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKETCHY_MARKER = "rendered_256x256/"


def _sketchy_key(path: Path) -> str | None:
    """Path relative to the Sketchy root when ``path`` lies in a Sketchy tree, else None."""
    posix = path.resolve().as_posix()
    i = posix.rfind("/" + SKETCHY_MARKER)
    return posix[i + 1:] if i >= 0 else None


def collect_from_directory(root: Path, images_root: Path | None = None) -> list[tuple[str, Path]]:
    """(key, path) of every image file under ``root``, sorted by key."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    out = []
    for p in files:
        key = None
        if images_root is not None:
            try:
                key = p.resolve().relative_to(images_root.resolve()).as_posix()
            except ValueError:
                key = None
        if key is None:
            key = _sketchy_key(p)
        if key is None:
            key = p.relative_to(root).as_posix()
        out.append((key, p))
    out.sort(key=lambda kp: kp[0])
    return out


def collect_from_csv(path: Path, images_root: Path | None = None) -> list[tuple[str, Path]]:
    """(key, path) of the distinct sketches of a pair CSV, in order of first appearance."""
    check_input_file(path, what="a pair CSV file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Psc6kError(f"{path}: cannot read ({exc})") from None
    if "sketch" in header and "photo" in header:
        sketches = formats.read_pair_list(path).sketch
    elif header == list(formats.ST_TEST_COLUMNS):
        sketches = formats.read_annotations(path).sketch
    elif header == list(formats.ST_TRAIN_COLUMNS):
        sketches = formats.read_train_pairs(path).sketch
    elif header == ["sketch", "X", "Y"]:
        sketches = list(formats.read_keypoints_csv(path))
    else:
        raise Psc6kError(f"{path}: line 1: expected a pair CSV with columns photo,sketch[,...] or "
                         f"source_image,target_image,...; got {','.join(header) or 'nothing'}")
    keys = list(dict.fromkeys(sketches))
    if images_root is not None:
        return [(key, images_root / key) for key in keys]
    # No --images: the CSV's folder, or the Sketchy root recorded by build-pairs beside it
    candidates = [path.parent]
    recorded = recorded_sketchy_root(path.parent)
    if recorded is not None:
        candidates.append(recorded)
    probe = keys[:20]
    for base in candidates:
        if any((base / key).is_file() for key in probe):
            return [(key, base / key) for key in keys]
    tried = " or ".join(str(c) for c in candidates)
    raise ParameterError(f"{path}: its sketch paths (e.g. {keys[0]!r}) do not exist relative to {tried}; "
                         "pass `images`, the folder they are relative to (the Sketchy root)", param="images")


def collect(input_path: str, images: str | None) -> list[tuple[str, Path]]:
    """(key, path) of the sketches of ``input_path`` (a folder of images or a CSV), paths of a
    CSV relative to ``images`` (or found as :func:`collect_from_csv` says)."""
    src = Path(input_path)
    images_root = Path(images) if images else None
    if images_root is not None and not images_root.is_dir():
        raise ParameterError(f"`images` {images_root}: not a directory", param="images")
    if src.is_dir():
        items = collect_from_directory(src, images_root)
        if not items:
            raise Psc6kError(f"{src}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found under it")
        refuse_photo_folder(src, [path for _, path in items])
        return items
    if src.is_file():
        items = collect_from_csv(src, images_root)
        if not items:
            raise Psc6kError(f"{src}: no sketches listed")
        return items
    raise Psc6kError(f"{src}: no such file or directory (expected a folder of sketches or a pair CSV)")

