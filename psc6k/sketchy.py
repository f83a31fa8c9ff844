"""The Sketchy database layout (SPEC §2): category names, ids, paths and list files.

All paths handed around in psc6k are relative to the Sketchy root and use ``/``, exactly as in
the PSC6K CSVs, e.g. ``rendered_256x256/256x256/photo/tx_000100000000/airplane/n02691156_10151.jpg``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from psc6k.inputs import check_input_file

#: The 125 Sketchy categories in alphabetical order; PSC6K's ``class`` is the 1-based index here.
SKETCHY_CATEGORIES: tuple[str, ...] = tuple(sorted("""
airplane alarm_clock ant ape apple armor axe banana bat bear bee beetle bell bench bicycle blimp
bread butterfly cabin camel candle cannon car_(sedan) castle cat chair chicken church couch cow
crab crocodilian cup deer dog dolphin door duck elephant eyeglasses fan fish flower frog geyser
giraffe guitar hamburger hammer harp hat hedgehog helicopter hermit_crab horse hot-air_balloon
hotdog hourglass jack-o-lantern jellyfish kangaroo knife lion lizard lobster motorcycle mouse
mushroom owl parrot pear penguin piano pickup_truck pig pineapple pistol pizza pretzel rabbit
raccoon racket ray rhinoceros rifle rocket sailboat saw saxophone scissors scorpion sea_turtle
seagull seal shark sheep shoe skyscraper snail snake songbird spider spoon squirrel starfish
strawberry swan sword table tank teapot teddy_bear tiger tree trumpet turtle umbrella violin
volcano wading_bird wheelchair windmill window wine_bottle zebra
""".split()))
assert len(SKETCHY_CATEGORIES) == 125

PHOTO_DIR = "rendered_256x256/256x256/photo/tx_000100000000"
SKETCH_DIR = "rendered_256x256/256x256/sketch/tx_000100000000"
INVALID_LISTS = ("error", "pose", "ambiguous", "context")
PHOTO_EXT = ".jpg"
SKETCH_EXT = ".png"
#: File beside pair / annotation CSVs recording the Sketchy root their paths are relative to
#: (``{"sketchy_root": ...}``; written by ``psc6k build-pairs`` and ``psc6k demo``).
SUMMARY_FILE = "summary.json"


def sketchy_root_of_photo(path) -> Path | None:
    """The Sketchy root above ``path`` when it is a Sketchy photo
    (``ROOT/rendered_256x256/256x256/photo/...``), else None.

    Examples
    --------
    >>> sketchy_root_of_photo("/d/Sketchy/rendered_256x256/256x256/photo/tx_000000000000/ant/a.jpg").as_posix()
    '/d/Sketchy'
    >>> sketchy_root_of_photo("/d/Sketchy/rendered_256x256/256x256/sketch/tx_000000000000/ant/a-1.png") is None
    True
    """
    parts = Path(path).parts
    for i in range(len(parts) - 3):
        if parts[i] == "rendered_256x256" and parts[i + 2] == "photo":
            return Path(*parts[:i]) if i else Path(".")
    return None


def write_sketchy_root(folder, root, **extra) -> Path:
    """Record in ``folder``'s :data:`SUMMARY_FILE` that its CSVs' paths are relative to ``root``
    (only for a folder that has no summary yet; ``psc6k build-pairs`` writes a fuller one)."""
    path = Path(folder) / SUMMARY_FILE
    path.write_text(json.dumps({"sketchy_root": str(Path(root).resolve()), **extra}, indent=2) + "\n",
                    encoding="utf-8")
    return path


def recorded_sketchy_root(folder) -> Path | None:
    """The Sketchy root noted in ``folder``'s :data:`SUMMARY_FILE`, if any (None for a missing,
    unreadable or malformed file: the caller then asks for the root)."""
    summary = Path(folder) / SUMMARY_FILE
    if not summary.is_file():
        return None
    try:
        root = json.loads(summary.read_text(encoding="utf-8")).get("sketchy_root")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if isinstance(root, str) and root else None


def photo_relpath(category: str, photo_id: str) -> str:
    """Path of a photo relative to the Sketchy root."""
    return f"{PHOTO_DIR}/{category}/{photo_id}{PHOTO_EXT}"


def sketch_relpath(category: str, sketch_id: str) -> str:
    """Path of a sketch relative to the Sketchy root."""
    return f"{SKETCH_DIR}/{category}/{sketch_id}{SKETCH_EXT}"


def category_of(relpath: str) -> str:
    """Category of an image path (its parent folder's name)."""
    parts = relpath.replace("\\", "/").split("/")
    if len(parts) < 2:
        raise ValueError(f"path {relpath!r} has no category folder")
    return parts[-2]


def image_id(relpath: str) -> str:
    """Photo or sketch id of a path: file name without extension."""
    return os.path.splitext(relpath.replace("\\", "/").rsplit("/", 1)[-1])[0]


def photo_id_of_sketch(sketch_id: str) -> str:
    """``n02691156_10151-3`` -> ``n02691156_10151``."""
    base = image_id(sketch_id)
    head, sep, tail = base.rpartition("-")
    return head if sep and tail.isdigit() else base


def class_indices(categories=SKETCHY_CATEGORIES) -> dict[str, int]:
    """``{category: class}`` for every category: its 1-based position in ``categories``, PSC6K's
    ``class`` column (Sketchy's 125 categories are listed alphabetically, ``airplane`` = 1).

    >>> class_indices(["airplane", "cat"])
    {'airplane': 1, 'cat': 2}
    """
    return {c: i + 1 for i, c in enumerate(categories)}


def class_index(category: str, categories=SKETCHY_CATEGORIES) -> int:
    """Class of one ``category`` (see :func:`class_indices`); ``ValueError`` when it is not listed."""
    try:
        return class_indices(categories)[category]
    except KeyError:
        raise ValueError(f"category {category!r} is not in the category list") from None


def read_id_list(path) -> list[str]:
    """Read a Sketchy list file tolerantly.

    Accepts ids with or without a ``category/`` prefix and with or without an extension, blank
    lines, CRLF and surrounding spaces. Returns the bare ids in file order.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "list.txt")
    >>> with open(p, "w", newline="") as fh:
    ...     _ = fh.write("airplane/n02691156_10151.jpg\\r\\n\\n n02691156_58 \\n")
    >>> read_id_list(p)
    ['n02691156_10151', 'n02691156_58']
    """
    ids = []
    with open(check_input_file(path, what="a Sketchy list file", max_bytes=256 * 1024**2),
              encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            ids.append(image_id(line))
    return ids


def read_id_list_with_category(path) -> list[tuple[str | None, str]]:
    """Like :func:`read_id_list` but keeps the category prefix when a line has one."""
    out = []
    with open(check_input_file(path, what="a Sketchy list file", max_bytes=256 * 1024**2),
              encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            line = line.strip().replace("\\", "/")
            if not line or line.startswith("#"):
                continue
            cat = line.rsplit("/", 1)[0].rsplit("/", 1)[-1] if "/" in line else None
            out.append((cat, image_id(line)))
    return out


def list_categories(root) -> list[str]:
    """Categories present under the photo folder of a Sketchy root, sorted."""
    photo_root = Path(root) / PHOTO_DIR
    if not photo_root.is_dir():
        raise FileNotFoundError(f"{photo_root}: not a Sketchy root (no {PHOTO_DIR} folder)")
    return sorted(p.name for p in photo_root.iterdir() if p.is_dir())
