"""Submissions: what a method hands in to be scored (see ``docs/submission.md``).

Two containers hold the same content:

JSON ``{"psc6k_submission": 1, "method": str, "kind": "flow" | "keypoints", "pairs": [...]}``
    each pair ``{"photo", "sketch", "sketch_to_photo", "photo_to_sketch"}``; for ``flow`` the two
    fields are H x W x 2 nested lists (SPEC §5: normalised (u, v), ``align_corners=True``, laid on
    the source grid), for ``keypoints`` 8 x 2 lists of predicted pixel (x, y). May be gzipped.
NPZ  arrays ``photo``, ``sketch`` (str, N), ``sketch_to_photo``, ``photo_to_sketch`` (float,
    ``[N, H, W, 2]`` or ``[N, 8, 2]``), optional ``method`` and ``kind``; read with
    ``allow_pickle=False``.

This module is the one reader, used by ``psc6k eval`` and by the scoring server alike.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import SubmissionError

SUBMISSION_VERSION = 1
KINDS = ("flow", "keypoints")
DIRECTIONS = ("sketch_to_photo", "photo_to_sketch")
#: Largest magnitude accepted for any value. Flows outside [-1, 1] are legal (they miss), but
#: values this large are a bug in the submitter's code, and would overflow in float32 maths.
MAX_ABS_VALUE = 1e6
#: Default cap on the decompressed size of a submission (gzip JSON or NPZ members).
DEFAULT_MAX_DECOMPRESSED = 8 * 1024**3


@dataclass
class Submission:
    """Predictions of one method for a set of pairs.

    Attributes
    ----------
    method : str
    kind : {"flow", "keypoints"}
    photo, sketch : list of str, length N
        Pair paths, exactly as in the annotation CSV.
    sketch_to_photo, photo_to_sketch : ndarray
        ``kind == "flow"``: float ``[N, H, W, 2]`` normalised flows (SPEC §5).
        ``kind == "keypoints"``: float ``[N, 8, 2]`` predicted pixels (x, y) in the target image.
    """

    method: str
    kind: str
    photo: list
    sketch: list
    sketch_to_photo: np.ndarray
    photo_to_sketch: np.ndarray

    def __len__(self) -> int:
        return len(self.photo)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.photo, self.sketch))

    def to_json_dict(self) -> dict:
        return {
            "psc6k_submission": SUBMISSION_VERSION, "method": self.method, "kind": self.kind,
            "pairs": [{"photo": p, "sketch": s, "sketch_to_photo": a.tolist(), "photo_to_sketch": b.tolist()}
                      for p, s, a, b in zip(self.photo, self.sketch, self.sketch_to_photo, self.photo_to_sketch)],
        }


# --------------------------------------------------------------------------- validation
def _check_values(sub: Submission, source) -> None:
    """Shapes, finiteness and magnitude of every array; errors name the pair and field."""
    n = len(sub.photo)
    if n == 0:
        raise SubmissionError("no pairs (expected at least one)", source=source, field="pairs")
    if len(sub.sketch) != n:
        raise SubmissionError(f"{len(sub.photo)} photos but {len(sub.sketch)} sketches", source=source)
    for name in DIRECTIONS:
        arr = getattr(sub, name)
        if arr.dtype.kind not in "fiu":
            raise SubmissionError(f"expected a float array, got dtype {arr.dtype}", source=source, field=name)
        if sub.kind == "flow":
            if arr.ndim != 4 or arr.shape[-1] != 2 or arr.shape[1] < 2 or arr.shape[2] < 2:
                raise SubmissionError(f"expected shape [N, H, W, 2] with H, W >= 2, got {list(arr.shape)}",
                                      source=source, field=name)
        elif arr.shape[1:] != (NUM_KEYPOINTS, 2) or arr.ndim != 3:
            raise SubmissionError(f"expected shape [N, {NUM_KEYPOINTS}, 2], got {list(arr.shape)}",
                                  source=source, field=name)
        if arr.shape[0] != n:
            raise SubmissionError(f"has {arr.shape[0]} entries for {n} pairs", source=source, field=name)
        if arr.dtype.kind == "f":
            flat = arr.reshape(n, -1)
            bad_rows = ~np.isfinite(flat).all(axis=1)
            if bad_rows.any():
                i = int(np.flatnonzero(bad_rows)[0])
                raise SubmissionError(f"contains NaN or Inf ({int(bad_rows.sum())} pair(s) affected); "
                                      "all values must be finite", source=source, field=name,
                                      pair=(sub.photo[i], sub.sketch[i]))
        big = (np.abs(arr.reshape(n, -1)) > MAX_ABS_VALUE).any(axis=1)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise SubmissionError(f"contains values beyond +-{MAX_ABS_VALUE:g}; expected normalised flow "
                                  "values or pixel coordinates", source=source, field=name,
                                  pair=(sub.photo[i], sub.sketch[i]))
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(sub.photo, sub.sketch)):
        if pair in seen:
            raise SubmissionError(f"duplicate pair (entries {seen[pair]} and {i})", source=source, pair=pair)
        seen[pair] = i


def _contains_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list) and any(_contains_bool(v) for v in value)


def _from_json_obj(obj, source) -> Submission:
    if not isinstance(obj, dict):
        raise SubmissionError(f"expected a JSON object at the top level, got {type(obj).__name__}", source=source)
    version = obj.get("psc6k_submission")
    if version is None:
        raise SubmissionError('missing "psc6k_submission": 1 (the format version)', source=source,
                              field="psc6k_submission")
    if version != SUBMISSION_VERSION or isinstance(version, bool):
        raise SubmissionError(f"unsupported format version {version!r}; this scorer reads version "
                              f"{SUBMISSION_VERSION}", source=source, field="psc6k_submission")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {kind!r}", source=source, field="kind")
    method = obj.get("method", "unnamed")
    if not isinstance(method, str):
        raise SubmissionError(f"expected a string, got {type(method).__name__}", source=source, field="method")
    pairs = obj.get("pairs")
    if not isinstance(pairs, list):
        raise SubmissionError("expected a list of pairs", source=source, field="pairs")
    if not pairs:
        raise SubmissionError("no pairs (expected at least one)", source=source, field="pairs")
    photo, sketch, arrays = [], [], {d: [] for d in DIRECTIONS}
    shape = None
    for i, entry in enumerate(pairs):
        if not isinstance(entry, dict):
            raise SubmissionError(f"pairs[{i}] is not an object", source=source, field="pairs")
        p, s = entry.get("photo"), entry.get("sketch")
        for key, val in (("photo", p), ("sketch", s)):
            if not isinstance(val, str) or not val:
                raise SubmissionError(f"pairs[{i}].{key} must be a non-empty string", source=source, field=key)
        for d in DIRECTIONS:
            if d not in entry:
                raise SubmissionError(f"missing (pairs[{i}])", source=source, pair=(p, s), field=d)
            value = entry[d]
            try:
                arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            except (ValueError, TypeError, OverflowError):
                arr = None
            if arr is not None and arr.dtype.kind in "iu" and _contains_bool(value):
                arr = np.asarray(True)  # numpy silently turns [true, 2] into [1, 2]
            if arr is None or arr.dtype.kind not in "iuf" or arr.ndim == 0:
                if arr is not None and arr.dtype.kind == "b":
                    raise SubmissionError(f"not a rectangular array of numbers (found booleans) (pairs[{i}])",
                                          source=source, pair=(p, s), field=d)
                # strings, booleans, null and ragged lists are refused rather than coerced
                what = "not a rectangular array of numbers"
                if arr is not None and arr.dtype.kind == "O" and arr.ndim > 0:
                    what += " (null, a nested mix, or an integer too large for float64)"
                elif arr is not None and arr.dtype.kind in "USb" and arr.ndim > 0:
                    what += f" (found {'booleans' if arr.dtype.kind == 'b' else 'strings'})"
                raise SubmissionError(f"{what} (pairs[{i}])", source=source, pair=(p, s), field=d)
            arr = arr.astype(np.float64, copy=False)
            expected = (NUM_KEYPOINTS, 2) if kind == "keypoints" else None
            if kind == "flow" and (arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] < 2 or arr.shape[1] < 2):
                raise SubmissionError(f"expected an H x W x 2 array with H, W >= 2, got shape {list(arr.shape)}",
                                      source=source, pair=(p, s), field=d)
            if expected and arr.shape != expected:
                raise SubmissionError(f"expected shape [8, 2], got {list(arr.shape)}", source=source,
                                      pair=(p, s), field=d)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise SubmissionError(f"shape {list(arr.shape)} differs from the first pair's {list(shape)}; "
                                      "all flows of a submission must share one size", source=source,
                                      pair=(p, s), field=d)
            arrays[d].append(arr)
        photo.append(p)
        sketch.append(s)
    return Submission(method, kind, photo, sketch, np.stack(arrays["sketch_to_photo"]),
                      np.stack(arrays["photo_to_sketch"]))


#: JSON larger than this is first tried on the fast path below.
FAST_JSON_MIN_BYTES = 1 << 20
_ARRAY_FIELD = re.compile(rb'"(sketch_to_photo|photo_to_sketch)"\s*:\s*(\[[-+0-9.eE,\s\[\]]*\])')
_NUMBER_CHARS = b"0123456789.eE+- \t\r\n"


def _nested_skeleton(shape) -> bytes:
    """Brackets and commas of a nested list of the given shape, e.g. (2, 2) -> b"[[,],[,]]"."""
    inner = b"," * (shape[-1] - 1)
    for n in reversed(shape[:-1]):
        inner = b",".join([b"[" + inner + b"]"] * n)
    return b"[" + inner + b"]"


def _array_shape(text: bytes):
    """Shape of a JSON array of numbers from its brackets and commas; None if not rectangular
    (H x W x 2 or K x 2)."""
    skeleton = text.translate(None, _NUMBER_CHARS)
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth == 3:
        shape = (skeleton.count(b"]],[[") + 1, skeleton.split(b"]],", 1)[0].count(b"],[") + 1, 2)
    elif depth == 2:
        shape = (skeleton.count(b"],[") + 1, 2)
    else:
        return None
    return shape if skeleton == _nested_skeleton(shape) else None


def _parse_numbers(texts: list) -> np.ndarray | None:
    """All numbers of many JSON arrays, in order, parsed in one pass by pandas' C reader."""
    import pandas as pd

    buf = b"\n".join(t.translate(None, b"[] \t\r\n").replace(b",", b"\n") for t in texts)
    try:
        col = pd.read_csv(io.BytesIO(buf), header=None, names=["v"], dtype=np.float64, engine="c",
                          skip_blank_lines=False, na_filter=False)
    except (ValueError, pd.errors.ParserError):
        return None
    return col["v"].to_numpy()


def _from_json_fast(data: bytes, source):
    """Large JSON flows: parse the numeric arrays in C (pandas' float reader) and only the small
    skeleton with ``json``. Any surprise returns None and the caller takes the plain
    ``json.loads`` path, whose messages are the reference; both give identical arrays (tested)."""
    texts: list = []

    def stash(m):
        texts.append(m.group(2).rstrip(b", \t\r\n"))
        tail = m.group(2)[len(texts[-1]):]
        return b'"' + m.group(1) + b'":{"__psc6k_array__":' + str(len(texts) - 1).encode() + b"}" + tail

    try:
        skeleton = json.loads(_ARRAY_FIELD.sub(stash, data))
    except (ValueError, RecursionError):
        return None
    if not isinstance(skeleton, dict) or not isinstance(skeleton.get("pairs"), list) or not texts:
        return None
    shapes = [_array_shape(t) for t in texts]
    if any(s is None for s in shapes):
        return None
    values = _parse_numbers(texts)
    sizes = [int(np.prod(s)) for s in shapes]
    if values is None or values.size != sum(sizes):
        return None
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for entry in skeleton["pairs"]:
        if not isinstance(entry, dict):
            return None
        for d in DIRECTIONS:
            ref = entry.get(d)
            if not (isinstance(ref, dict) and isinstance(ref.get("__psc6k_array__"), int)):
                return None
            k = ref["__psc6k_array__"]
            entry[d] = values[offsets[k]:offsets[k + 1]].reshape(shapes[k])
    try:
        return _from_json_obj(skeleton, source)
    except SubmissionError:
        return None


def _check_zip_members(data: bytes | Path, max_decompressed: int, source) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise SubmissionError(f"not a valid NPZ file ({exc})", source=source) from None
    if total > max_decompressed:
        raise SubmissionError(f"NPZ would decompress to {total / 1e6:.0f} MB, over the limit of "
                              f"{max_decompressed / 1e6:.0f} MB", source=source)


def _from_npz(data: bytes | Path, source, max_decompressed: int) -> Submission:
    _check_zip_members(data, max_decompressed, source)
    try:
        npz = np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt archives
        raise SubmissionError(f"not a readable NPZ file ({exc})", source=source) from None
    with npz:
        names = set(npz.files)
        missing = [k for k in ("photo", "sketch", *DIRECTIONS) if k not in names]
        if missing:
            raise SubmissionError(f"NPZ lacks arrays {missing}; expected photo, sketch, sketch_to_photo, "
                                  "photo_to_sketch (and optionally method, kind)", source=source)
        try:
            arrays = {k: npz[k] for k in names}
        except ValueError as exc:  # object arrays with allow_pickle=False
            raise SubmissionError(f"NPZ holds an array that needs pickle ({exc}); use plain numeric "
                                  "and string arrays", source=source) from None
        except Exception as exc:
            raise SubmissionError(f"NPZ member unreadable ({exc})", source=source) from None
    for key in ("photo", "sketch"):
        if arrays[key].dtype.kind not in "US" or arrays[key].ndim != 1:
            raise SubmissionError(f"expected a 1-D string array, got dtype {arrays[key].dtype} shape "
                                  f"{list(arrays[key].shape)}", source=source, field=key)
    method = str(arrays["method"]) if "method" in arrays else "unnamed"
    s2p = arrays["sketch_to_photo"]
    if "kind" in arrays:
        kind = str(arrays["kind"])
        if kind not in KINDS:
            raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {kind!r}", source=source, field="kind")
    else:
        kind = "keypoints" if s2p.ndim == 3 else "flow"
    for key in DIRECTIONS:
        if arrays[key].dtype.kind not in "fiu":
            raise SubmissionError(f"expected a float array, got dtype {arrays[key].dtype}", source=source, field=key)
    return Submission(method, kind, [str(x) for x in arrays["photo"]], [str(x) for x in arrays["sketch"]],
                      arrays["sketch_to_photo"], arrays["photo_to_sketch"])


def load_submission(src, *, source=None, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Submission:
    """Read and validate a submission from a path or from raw bytes.

    The container is recognised by its first bytes (NPZ = zip, gzip, else JSON), so a file's
    extension does not matter.

    Parameters
    ----------
    src : path-like or bytes
    source : str, optional
        Name used in error messages (defaults to the path).
    max_decompressed : int
        Largest decompressed size accepted, in bytes (guards against gzip/zip bombs).

    Raises
    ------
    SubmissionError
        Naming the pair and field at fault.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        source = source or "submission"
        path = None
    else:
        path = Path(src)
        source = source or str(path)
        if not path.is_file():
            raise SubmissionError("file not found", source=source)
        with open(path, "rb") as fh:
            head = fh.read(4)
        data = None
    head = data[:4] if data is not None else head
    if head.startswith(b"PK"):
        sub = _from_npz(data if data is not None else path, source, max_decompressed)
    else:
        if data is None:
            data = path.read_bytes()
        if head.startswith(b"\x1f\x8b"):
            data = _gunzip(data, max_decompressed, source)
        if not data.strip():
            raise SubmissionError("empty submission", source=source)
        sub = _from_json_fast(data, source) if len(data) > FAST_JSON_MIN_BYTES else None
        if sub is not None:
            _check_values(sub, source)
            return sub
        try:
            obj = json.loads(data)
        except UnicodeDecodeError:
            raise SubmissionError("not JSON, gzip JSON or NPZ (unrecognised bytes)", source=source) from None
        except json.JSONDecodeError as exc:
            raise SubmissionError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                                  source=source) from None
        except ValueError as exc:  # e.g. an integer literal of thousands of digits
            raise SubmissionError(f"unreadable JSON value ({exc})", source=source) from None
        except RecursionError:
            raise SubmissionError("JSON nested too deeply", source=source) from None
        sub = _from_json_obj(obj, source)
    _check_values(sub, source)
    return sub


def _gunzip(data: bytes, max_decompressed: int, source) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            while True:
                chunk = gz.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                if out.tell() > max_decompressed:
                    raise SubmissionError(f"gzip data decompresses to more than {max_decompressed / 1e6:.0f} MB",
                                          source=source)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SubmissionError(f"corrupt or truncated gzip data ({exc})", source=source) from None
    return out.getvalue()


def save_submission(sub: Submission, path, *, compress: bool = False) -> Path:
    """Write a submission; ``.npz`` -> NPZ, ``.json`` -> JSON, ``.json.gz`` -> gzip JSON.

    NPZ is stored uncompressed by default: scoring a full-size NPZ is then mostly a memory copy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_values(sub, str(path))
    name = path.name.lower()
    if name.endswith(".npz"):
        save = np.savez_compressed if compress else np.savez
        with open(path, "wb") as fh:
            save(fh, photo=np.array(sub.photo, dtype=str), sketch=np.array(sub.sketch, dtype=str),
                 sketch_to_photo=np.asarray(sub.sketch_to_photo), photo_to_sketch=np.asarray(sub.photo_to_sketch),
                 method=np.array(sub.method), kind=np.array(sub.kind))
    elif name.endswith(".json") or name.endswith(".json.gz"):
        text = json.dumps(sub.to_json_dict(), separators=(",", ":")).encode()
        if name.endswith(".gz"):
            text = gzip.compress(text, mtime=0)
        path.write_bytes(text)
    else:
        raise SubmissionError("unknown extension; use .npz, .json or .json.gz", source=str(path))
    return path


def align_submission(sub: Submission, ann, *, allow_partial: bool = False):
    """Match a submission's pairs to annotation rows.

    Returns
    -------
    ann_idx, sub_idx : ndarray of int
        ``ann_idx[k]`` is the annotation row scored with submission entry ``sub_idx[k]``,
        ordered by annotation row.

    Raises
    ------
    SubmissionError
        Pairs not in the annotations (always), or annotation pairs the submission lacks
        (unless ``allow_partial``); the message gives the count and the first few.
    """
    index = ann.index()
    hits = [index.get(pair, -1) for pair in zip(sub.photo, sub.sketch)]
    unknown = [i for i, h in enumerate(hits) if h < 0]
    if unknown:
        first = ", ".join(f"(photo={sub.photo[i]!r}, sketch={sub.sketch[i]!r})" for i in unknown[:3])
        raise SubmissionError(f"{len(unknown)} pair(s) are not in the annotations {ann.source or ''}: "
                              f"{first}{' ...' if len(unknown) > 3 else ''}; paths must match the CSV exactly")
    sub_idx = np.asarray(hits, dtype=np.int64)
    order = np.argsort(sub_idx, kind="stable")
    ann_idx, sub_idx = sub_idx[order], order.astype(np.int64)
    if len(ann_idx) < len(ann) and not allow_partial:
        covered = np.zeros(len(ann), dtype=bool)
        covered[ann_idx] = True
        missing = np.flatnonzero(~covered)
        first = ", ".join(f"(photo={ann.photo[i]!r}, sketch={ann.sketch[i]!r})" for i in missing[:3])
        raise SubmissionError(f"{len(missing)} of {len(ann)} annotated pairs are missing: {first}"
                              f"{' ...' if len(missing) > 3 else ''} (use --allow-partial to score the rest)")
    return ann_idx, sub_idx


def identity_flow(n: int, size: int = 16) -> np.ndarray:
    """``[n, size, size, 2]`` identity flow in the SPEC §5 convention (every pixel maps to itself)."""
    lin = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(lin, lin, indexing="xy"), axis=-1)
    return np.broadcast_to(grid, (n, size, size, 2)).copy()
