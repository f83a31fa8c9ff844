"""The PSC6K file formats (SPEC §3): the one module that reads and writes them.

Files
-----
``test_pairs_ps.csv``   ``photo,sketch,class,XA,YA,XB,YB``  one row per pair, A = photo, B = sketch
``test_pairs_st.csv``   ``source_image,target_image,class,XA,YA,XB,YB``  two rows per pair
                        (photo->sketch, then sketch->photo), A = source
``train_pairs_ps.csv``  ``photo,sketch,class,flip``  two rows per pair (flip 0, 1)
``train_pairs_st.csv``  ``source_image,target_image,class,flip``  four rows per pair
``keypoints.csv``       ``sketch,X,Y``  output of ``psc6k build-keypoints``
``clicks.csv``          raw crowd clicks, :data:`CLICK_COLUMNS`

Paths are relative to the Sketchy root. Coordinates are pixels (x = column, y = row, origin at
the centre of the top-left pixel); lists are 8 floats joined by ``;``. ``class`` is the 1-based
index of the category in the alphabetical list of categories (the 125 Sketchy names, or, for a
benchmark built on other images, the sorted categories of the file).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.csvsafe import safe_frame, safe_row
from psc6k.inputs import check_input_file, file_sha256, read_text
from psc6k.errors import FormatError
from psc6k.sketchy import SKETCHY_CATEGORIES, category_of, class_indices

PS_TEST_COLUMNS = ("photo", "sketch", "class", "XA", "YA", "XB", "YB")
ST_TEST_COLUMNS = ("source_image", "target_image", "class", "XA", "YA", "XB", "YB")
PS_TRAIN_COLUMNS = ("photo", "sketch", "class", "flip")
ST_TRAIN_COLUMNS = ("source_image", "target_image", "class", "flip")
KEYPOINT_COLUMNS = ("sketch", "X", "Y")
#: Raw click export of the annotation app / input of ``psc6k aggregate``. ``keypoint`` is the
#: 0-based keypoint index; x, y are photo pixels. Extra columns are allowed and kept.
CLICK_COLUMNS = ("participant", "photo", "sketch", "keypoint", "x", "y", "rt_ms", "created_at")

#: Coordinates may lie anywhere on the displayed image, whose edges are half a pixel beyond the
#: first and last pixel centres.
COORD_MIN, COORD_MAX = -0.5, IMAGE_SIZE - 0.5


# --------------------------------------------------------------------------- helpers
def format_float(value: float) -> str:
    """Shortest text that reads back to the same float64 (``repr``), e.g. ``121.5``."""
    return repr(float(value))


def format_list(values: Iterable[float]) -> str:
    """8 floats joined by ``;``."""
    return ";".join(format_float(v) for v in values)


def _parse_list(text: str, *, file, row, column, n=NUM_KEYPOINTS) -> list[float]:
    parts = text.split(";")
    if len(parts) != n:
        raise FormatError(f"expected {n} values joined by ';', got {len(parts)}: {text[:60]!r}",
                          file=file, row=row, column=column)
    out = []
    for k, part in enumerate(parts):
        try:
            v = float(part)
        except ValueError:
            raise FormatError(f"value {k + 1} is not a number: {part.strip()[:30]!r}",
                              file=file, row=row, column=column) from None
        if not math.isfinite(v):
            raise FormatError(f"value {k + 1} is {part.strip()!r}; coordinates must be finite",
                              file=file, row=row, column=column)
        out.append(v)
    return out


def _check_in_image(values, *, file, row, column, size=IMAGE_SIZE):
    lo, hi = COORD_MIN, size - 0.5
    for k, v in enumerate(values):
        if not lo <= v <= hi:
            raise FormatError(f"value {k + 1} = {v} lies outside the {size}x{size} image "
                              f"(expected {lo} <= value <= {hi})", file=file, row=row, column=column)


def _open_csv(path):
    """Read a CSV as (header, rows with their 1-based line numbers). Tolerates BOM and CRLF."""
    path = Path(path)
    text = read_text(path, what="a CSV file")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise FormatError("empty file (expected a header line)", file=path) from None
    header = [h.strip() for h in header]
    rows = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        rows.append((reader.line_num, row))
    return header, rows


def _require_columns(header, expected, *, file):
    if tuple(header) != tuple(expected):
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not detail:
            detail.append(f"columns out of order: {header}")
        raise FormatError(f"wrong columns ({'; '.join(detail)}); expected exactly {','.join(expected)}",
                          file=file, row=1)


def _resolve_categories(paths: Sequence[str], categories) -> tuple[str, ...]:
    if categories is not None:
        return tuple(categories)
    found = {category_of(p) for p in paths}
    if found <= set(SKETCHY_CATEGORIES):
        return SKETCHY_CATEGORIES
    return tuple(sorted(found))


def _is_photo_path(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return "photo" in parts[:-2] and "sketch" not in parts[:-2]


# --------------------------------------------------------------------------- test annotations
@dataclass
class Annotations:
    """Ground truth of a PSC6K split: N photo-sketch pairs with 8 corresponding keypoints each.

    Attributes
    ----------
    photo, sketch : list of str, length N
        Paths relative to the Sketchy root.
    category : list of str, length N
        Category of each pair (the photo's folder).
    cls : ndarray of int, shape (N,)
        PSC6K ``class``: 1-based index of ``category`` in ``categories``.
    photo_kps, sketch_kps : ndarray of float64, shape (N, 8, 2)
        (x, y) pixels on the photo (XA, YA) and on the sketch (XB, YB).
    categories : tuple of str
        Alphabetical category list that ``cls`` indexes.
    source : str or None
        File the annotations were read from, for messages.
    sha256 : str or None
        SHA-256 of that file's bytes (provenance of every score), when read from a file.
    """

    photo: list
    sketch: list
    category: list
    cls: np.ndarray
    photo_kps: np.ndarray
    sketch_kps: np.ndarray
    categories: tuple = SKETCHY_CATEGORIES
    source: str | None = None
    sha256: str | None = None
    _index: dict | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.photo)

    @classmethod
    def from_arrays(cls, photo, sketch, photo_kps, sketch_kps, categories=None, source=None):
        """Build annotations from paths and keypoint arrays; classes follow the categories.

        Examples
        --------
        >>> import numpy as np
        >>> kps = np.zeros((1, 8, 2))
        >>> a = Annotations.from_arrays(["p/airplane/x.jpg"], ["s/airplane/x-1.png"], kps, kps)
        >>> int(a.cls[0]), a.category[0]
        (1, 'airplane')
        """
        photo, sketch = [str(p) for p in photo], [str(s) for s in sketch]
        cats = _resolve_categories(photo, categories)
        category = [category_of(p) for p in photo]
        lookup = class_indices(cats)
        unknown = sorted({c for c in category if c not in lookup})
        if unknown:
            raise FormatError(f"categories {unknown[:5]} are not in the category list", file=source)
        ann = cls(photo, sketch, category, np.array([lookup[c] for c in category], dtype=np.int64),
                  np.asarray(photo_kps, dtype=np.float64).reshape(len(photo), NUM_KEYPOINTS, 2),
                  np.asarray(sketch_kps, dtype=np.float64).reshape(len(photo), NUM_KEYPOINTS, 2),
                  cats, source)
        ann.check_unique()
        return ann

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.photo, self.sketch))

    def index(self) -> dict[tuple[str, str], int]:
        """Mapping (photo, sketch) -> row index."""
        if self._index is None:
            self._index = {pair: i for i, pair in enumerate(zip(self.photo, self.sketch))}
        return self._index

    def check_unique(self, rows: Sequence[int] | None = None):
        seen: dict[tuple[str, str], int] = {}
        for i, pair in enumerate(zip(self.photo, self.sketch)):
            if pair in seen:
                line = rows[i] if rows is not None else None
                first = rows[seen[pair]] if rows is not None else seen[pair]
                raise FormatError(f"duplicate pair (photo={pair[0]!r}, sketch={pair[1]!r}); first seen "
                                  f"{'on line' if rows is not None else 'at index'} {first}",
                                  file=self.source, row=line)
            seen[pair] = i

    def subset(self, indices) -> "Annotations":
        idx = np.asarray(indices, dtype=np.int64)
        return Annotations([self.photo[i] for i in idx], [self.sketch[i] for i in idx],
                           [self.category[i] for i in idx], self.cls[idx], self.photo_kps[idx],
                           self.sketch_kps[idx], self.categories, self.source, self.sha256)


def read_annotations(path, categories=None, *, image_size: int = IMAGE_SIZE) -> Annotations:
    """Read ``test_pairs_ps.csv`` or ``test_pairs_st.csv`` into :class:`Annotations`.

    Every row is validated; the first problem raises :class:`~psc6k.errors.FormatError` naming
    file, line and column: wrong column set, not 8 values, non-numeric or NaN values,
    coordinates outside the image, duplicate pairs, a ``class`` that does not match the
    category of the photo's folder.

    Parameters
    ----------
    path : path-like
    categories : sequence of str, optional
        Alphabetical category list for ``class``. Default: the 125 Sketchy names when every
        category of the file is one of them, else the file's own categories, sorted.
    image_size : int
        Side of the images in pixels (coordinates must lie within it).
    """
    header, rows = _open_csv(path)
    if tuple(header) == PS_TEST_COLUMNS:
        layout = "ps"
    elif tuple(header) == ST_TEST_COLUMNS:
        layout = "st"
    else:
        expected = PS_TEST_COLUMNS if "photo" in header or "source_image" not in header else ST_TEST_COLUMNS
        _require_columns(header, expected, file=path)
    names = PS_TEST_COLUMNS if layout == "ps" else ST_TEST_COLUMNS
    parsed = _parse_test_rows(rows, names, path, image_size)
    if layout == "ps":
        photo, sketch, lines, cls_vals, pk, sk = (list(col) for col in zip(*parsed)) if parsed else ([],) * 6
    else:
        photo, sketch, lines, cls_vals, pk, sk = _fold_directions(parsed, path)
    photo_kps = np.array(pk).reshape(-1, NUM_KEYPOINTS, 2)
    sketch_kps = np.array(sk).reshape(-1, NUM_KEYPOINTS, 2)
    if not photo:
        raise FormatError("no pairs in file (only a header)", file=path)
    cats = _resolve_categories(photo, categories)
    category = _check_classes(photo, cls_vals, lines, cats, given=categories is not None, path=path,
                              column=names[0])
    ann = Annotations(photo, sketch, category, np.array(cls_vals, dtype=np.int64), photo_kps,
                      sketch_kps, cats, str(path), file_sha256(path))
    ann.check_unique(lines)
    return ann


def _parse_test_rows(rows, names, path, image_size):
    """Validated rows of a test CSV: ``(a_path, b_path, line, class, A[8, 2], B[8, 2])`` each, in file
    order; A and B are the keypoints of the first and second path column."""
    parsed = []
    for line, row in rows:
        if len(row) != len(names):
            raise FormatError(f"expected {len(names)} fields, got {len(row)}", file=path, row=line)
        a_path, b_path, cls_text = row[0].strip(), row[1].strip(), row[2].strip()
        for col, val in ((names[0], a_path), (names[1], b_path)):
            if not val:
                raise FormatError("empty path", file=path, row=line, column=col)
        try:
            cls_val = int(cls_text)
        except ValueError:
            raise FormatError(f"class must be an integer, got {cls_text!r}", file=path, row=line,
                              column="class") from None
        vals = {}
        for j, col in enumerate(names[3:], start=3):
            v = _parse_list(row[j], file=path, row=line, column=col)
            _check_in_image(v, file=path, row=line, column=col, size=image_size)
            vals[col] = v
        a = np.stack([vals["XA"], vals["YA"]], axis=-1)
        b = np.stack([vals["XB"], vals["YB"]], axis=-1)
        parsed.append((a_path, b_path, line, cls_val, a, b))
    return parsed


def _fold_directions(parsed, path):
    """Rows of ``test_pairs_st.csv`` (both directions of a pair) folded into one entry per
    (photo, sketch) pair, in order of first appearance; the two directions must agree.

    Returns the lists ``photo, sketch, lines, classes, photo_kps, sketch_kps``.
    """
    photo, sketch, lines, cls_vals, pk, sk = [], [], [], [], [], []
    seen: dict[tuple[str, str, bool], int] = {}
    pair_row: dict[tuple[str, str], int] = {}
    for src, tgt, line, c, a, b in parsed:
        src_is_photo = _is_photo_path(src)
        if src_is_photo == _is_photo_path(tgt):
            raise FormatError("cannot tell which of source_image/target_image is the photo "
                              "(expected one path with a 'photo' folder and one with 'sketch')",
                              file=path, row=line, column="source_image")
        p, s, pa, sb = (src, tgt, a, b) if src_is_photo else (tgt, src, b, a)
        key = (p, s, src_is_photo)
        if key in seen:
            raise FormatError(f"duplicate pair (photo={p!r}, sketch={s!r}) in the same direction; "
                              f"first on line {seen[key]}", file=path, row=line)
        seen[key] = line
        j = pair_row.get((p, s))
        if j is not None:  # the other direction of a pair already read: must agree
            if not (np.allclose(pk[j], pa) and np.allclose(sk[j], sb) and cls_vals[j] == c):
                raise FormatError(f"the two directions of pair (photo={p!r}, sketch={s!r}) disagree "
                                  f"(line {lines[j]} vs this line)", file=path, row=line)
            continue
        pair_row[(p, s)] = len(photo)
        photo.append(p), sketch.append(s), lines.append(line), cls_vals.append(c)
        pk.append(pa), sk.append(sb)
    return photo, sketch, lines, cls_vals, pk, sk


def _check_classes(photo, cls_vals, lines, cats, *, given: bool, path, column) -> list[str]:
    """The category of each photo path, checked against its ``class`` (1-based index in ``cats``)."""
    lookup = class_indices(cats)
    category = []
    for p, c, line in zip(photo, cls_vals, lines):
        try:
            cat = category_of(p)
        except ValueError:
            raise FormatError(f"path {p!r} has no category folder", file=path, row=line,
                              column=column) from None
        if cat not in lookup:
            raise FormatError(f"unknown category {cat!r} (not among the {len(cats)} categories)",
                              file=path, row=line, column=column)
        if c != lookup[cat]:
            hint = ""
            strangers = [x for x in cats if x not in SKETCHY_CATEGORIES]
            if not given and strangers and len(strangers) < len(cats):
                hint = (f"; note {strangers[:3]} {'is' if len(strangers) == 1 else 'are'} not among the 125 Sketchy "
                        "categories, so classes index the file's own sorted category list")
            raise FormatError(f"class {c} does not match category {cat!r} (expected class {lookup[cat]}, "
                              f"its 1-based alphabetical index among {len(cats)} categories{hint})",
                              file=path, row=line, column="class")
        category.append(cat)
    return category


def _write_rows(path, header, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(safe_row(header))
        writer.writerows(safe_row(row) for row in rows)


def write_test_pairs_ps(ann: Annotations, path) -> None:
    """Write ``test_pairs_ps.csv`` (one row per pair, A = photo, B = sketch)."""
    rows = []
    for i in range(len(ann)):
        a, b = ann.photo_kps[i], ann.sketch_kps[i]
        rows.append([ann.photo[i], ann.sketch[i], int(ann.cls[i]), format_list(a[:, 0]),
                     format_list(a[:, 1]), format_list(b[:, 0]), format_list(b[:, 1])])
    _write_rows(path, PS_TEST_COLUMNS, rows)


def write_test_pairs_st(ann: Annotations, path) -> None:
    """Write ``test_pairs_st.csv``: per pair, the photo->sketch row then the sketch->photo row."""
    rows = []
    for i in range(len(ann)):
        a, b = ann.photo_kps[i], ann.sketch_kps[i]
        for src, tgt, s, t in ((ann.photo[i], ann.sketch[i], a, b), (ann.sketch[i], ann.photo[i], b, a)):
            rows.append([src, tgt, int(ann.cls[i]), format_list(s[:, 0]), format_list(s[:, 1]),
                         format_list(t[:, 0]), format_list(t[:, 1])])
    _write_rows(path, ST_TEST_COLUMNS, rows)


def ps_to_st(ps_path, st_path) -> None:
    """Convert ``test_pairs_ps.csv`` to ``test_pairs_st.csv`` (or train ps to train st)."""
    header, _ = _open_csv(ps_path)
    if tuple(header) == PS_TRAIN_COLUMNS:
        write_train_pairs_st(read_train_pairs(ps_path), st_path)
    else:
        write_test_pairs_st(read_annotations(ps_path), st_path)


def st_to_ps(st_path, ps_path) -> None:
    """Convert ``test_pairs_st.csv`` to ``test_pairs_ps.csv`` (or train st to train ps)."""
    header, _ = _open_csv(st_path)
    if tuple(header) == ST_TRAIN_COLUMNS:
        write_train_pairs_ps(read_train_pairs(st_path), ps_path)
    else:
        write_test_pairs_ps(read_annotations(st_path), ps_path)


# --------------------------------------------------------------------------- train pairs
@dataclass
class TrainPairs:
    """Photo-sketch pairs of a training split (no keypoints). ``cls`` as in :class:`Annotations`."""

    photo: list
    sketch: list
    cls: np.ndarray
    categories: tuple = SKETCHY_CATEGORIES
    source: str | None = None

    def __len__(self) -> int:
        return len(self.photo)

    @classmethod
    def from_paths(cls, photo, sketch, categories=None):
        photo, sketch = [str(p) for p in photo], [str(s) for s in sketch]
        cats = _resolve_categories(photo, categories)
        lookup = class_indices(cats)
        return cls(photo, sketch, np.array([lookup[category_of(p)] for p in photo], dtype=np.int64), cats)

    @property
    def category(self) -> list[str]:
        return [self.categories[c - 1] for c in self.cls]


def read_train_pairs(path, categories=None) -> TrainPairs:
    """Read ``train_pairs_ps.csv`` or ``train_pairs_st.csv``; flips and directions are folded
    back into one entry per (photo, sketch) pair, in order of first appearance."""
    header, rows = _open_csv(path)
    if tuple(header) == PS_TRAIN_COLUMNS:
        layout = "ps"
    elif tuple(header) == ST_TRAIN_COLUMNS:
        layout = "st"
    else:
        _require_columns(header, PS_TRAIN_COLUMNS if "photo" in header or "source_image" not in header
                         else ST_TRAIN_COLUMNS, file=path)
    order: dict[tuple[str, str], tuple[int, int]] = {}
    for line, row in rows:
        if len(row) != 4:
            raise FormatError(f"expected 4 fields, got {len(row)}", file=path, row=line)
        a, b, c, f = (x.strip() for x in row)
        if f not in ("0", "1"):
            raise FormatError(f"flip must be 0 or 1, got {f!r}", file=path, row=line, column="flip")
        try:
            c = int(c)
        except ValueError:
            raise FormatError(f"class must be an integer, got {c!r}", file=path, row=line, column="class") from None
        if layout == "st" and not _is_photo_path(a):
            a, b = b, a
        order.setdefault((a, b), (c, line))
    if not order:
        raise FormatError("no pairs in file (only a header)", file=path)
    photo = [k[0] for k in order]
    cats = _resolve_categories(photo, categories)
    lookup = class_indices(cats)
    for (p, _), (c, line) in order.items():
        cat = category_of(p)
        if lookup.get(cat) != c:
            raise FormatError(f"class {c} does not match category {cat!r} (expected {lookup.get(cat)})",
                              file=path, row=line, column="class")
    return TrainPairs(photo, [k[1] for k in order], np.array([v[0] for v in order.values()], dtype=np.int64),
                      cats, str(path))


def write_train_pairs_ps(pairs: TrainPairs, path) -> None:
    """Write ``train_pairs_ps.csv``: per pair, rows with flip 0 and flip 1."""
    rows = [[p, s, int(c), f] for p, s, c in zip(pairs.photo, pairs.sketch, pairs.cls) for f in (0, 1)]
    _write_rows(path, PS_TRAIN_COLUMNS, rows)


def write_train_pairs_st(pairs: TrainPairs, path) -> None:
    """Write ``train_pairs_st.csv``: per pair, flip 0 then 1, each photo->sketch then sketch->photo."""
    rows = [[a, b, int(c), f] for p, s, c in zip(pairs.photo, pairs.sketch, pairs.cls)
            for f in (0, 1) for a, b in ((p, s), (s, p))]
    _write_rows(path, ST_TRAIN_COLUMNS, rows)


def read_pair_list(path) -> TrainPairs:
    """Read any CSV with ``photo,sketch`` columns (``class`` optional), e.g. ``test_pairs.csv``
    written by ``psc6k build-pairs`` or a PSC6K CSV; one entry per distinct pair."""
    header, rows = _open_csv(path)
    if "photo" not in header or "sketch" not in header:
        raise FormatError(f"expected columns photo,sketch (and optionally class); got {header}", file=path, row=1)
    ip, isk = header.index("photo"), header.index("sketch")
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise FormatError(f"expected {len(header)} fields, got {len(row)}", file=path, row=line)
        key = (row[ip].strip(), row[isk].strip())
        if not key[0] or not key[1]:
            raise FormatError("empty path", file=path, row=line)
        seen.setdefault(key, line)
    if not seen:
        raise FormatError("no pairs in file (only a header)", file=path)
    pairs = TrainPairs.from_paths([k[0] for k in seen], [k[1] for k in seen])
    pairs.source = str(path)
    return pairs


def write_pair_list(pairs: TrainPairs, path) -> None:
    """Write ``photo,sketch,class`` (one row per pair)."""
    _write_rows(path, ("photo", "sketch", "class"),
                [[p, s, int(c)] for p, s, c in zip(pairs.photo, pairs.sketch, pairs.cls)])


# --------------------------------------------------------------------------- keypoints.csv
def read_keypoints_csv(path) -> dict[str, np.ndarray]:
    """Read ``sketch,X,Y`` into {sketch path: float64 array (8, 2)}, in file order."""
    header, rows = _open_csv(path)
    _require_columns(header, KEYPOINT_COLUMNS, file=path)
    out: dict[str, np.ndarray] = {}
    for line, row in rows:
        if len(row) != 3:
            raise FormatError(f"expected 3 fields, got {len(row)}", file=path, row=line)
        sketch = row[0].strip()
        if not sketch:
            raise FormatError("empty sketch path", file=path, row=line, column="sketch")
        if sketch in out:
            raise FormatError(f"duplicate sketch {sketch!r}", file=path, row=line, column="sketch")
        xs = _parse_list(row[1], file=path, row=line, column="X")
        ys = _parse_list(row[2], file=path, row=line, column="Y")
        out[sketch] = np.stack([xs, ys], axis=-1)
    return out


def write_keypoints_csv(keypoints: Mapping[str, np.ndarray], path) -> None:
    """Write {sketch path: (8, 2) array} as ``sketch,X,Y``, in the mapping's order."""
    rows = []
    for sketch, kps in keypoints.items():
        kps = np.asarray(kps, dtype=np.float64)
        if kps.shape != (NUM_KEYPOINTS, 2):
            raise ValueError(f"keypoints of {sketch!r} have shape {kps.shape}, expected (8, 2)")
        rows.append([sketch, format_list(kps[:, 0]), format_list(kps[:, 1])])
    _write_rows(path, KEYPOINT_COLUMNS, rows)


# --------------------------------------------------------------------------- clicks.csv
def read_clicks(path):
    """Read a raw-click CSV into a ``pandas.DataFrame`` with at least :data:`CLICK_COLUMNS`.

    ``keypoint`` becomes int (0..7), ``x``, ``y``, ``rt_ms`` float; extra columns are kept.
    Raises :class:`FormatError` naming the line and column of the first bad value.
    """
    import pandas as pd

    path = check_input_file(path, what="a clicks CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise FormatError("empty file (expected a header line)", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FormatError(f"not a readable CSV: {exc}", file=path) from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in CLICK_COLUMNS if c not in df.columns]
    if missing:
        raise FormatError(f"missing columns {missing}; expected at least {','.join(CLICK_COLUMNS)}",
                          file=path, row=1)
    for col in ("participant", "photo", "sketch"):
        empty = np.flatnonzero(df[col].str.strip() == "")
        if len(empty):
            raise FormatError("empty value", file=path, row=int(empty[0]) + 2, column=col)
    kp = pd.to_numeric(df["keypoint"], errors="coerce")
    bad = np.flatnonzero(~(kp.notna() & (kp % 1 == 0) & (kp >= 0) & (kp < NUM_KEYPOINTS)))
    if len(bad):
        raise FormatError(f"keypoint must be an integer 0..{NUM_KEYPOINTS - 1}, got {df['keypoint'].iloc[bad[0]]!r}",
                          file=path, row=int(bad[0]) + 2, column="keypoint")
    df["keypoint"] = kp.astype(np.int64)
    for col in ("x", "y"):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(v.to_numpy(dtype=float)))
        if len(bad):
            raise FormatError(f"expected a finite number, got {df[col].iloc[bad[0]]!r}", file=path,
                              row=int(bad[0]) + 2, column=col)
        df[col] = v.astype(np.float64)
    df["rt_ms"] = pd.to_numeric(df["rt_ms"].replace("", np.nan), errors="coerce")
    return df


def write_clicks(df, path) -> None:
    """Write raw clicks (a DataFrame or a list of dicts) with :data:`CLICK_COLUMNS` first."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df))
    missing = [c for c in CLICK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"clicks lack columns {missing}")
    cols = list(CLICK_COLUMNS) + [c for c in df.columns if c not in CLICK_COLUMNS]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df[cols].copy()
    for col in ("x", "y"):
        out[col] = [format_float(v) for v in out[col]]
    safe_frame(out).to_csv(path, index=False, lineterminator="\n")


def clicks_to_csv_text(df) -> str:
    """The raw-click CSV as a string (for HTTP exports); same bytes as :func:`write_clicks`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "clicks.csv")
        write_clicks(df, p)
        with open(p, encoding="utf-8") as fh:
            return fh.read()
