"""The NPZ reader: a zip of ``.npy`` arrays, never unpickled, checked before it is inflated.

Member names, count, encryption, compression and every ``.npy`` header (dtype, shape and the size
the shape implies against the member's size) are read from the zip before any array data is
inflated; the declared total is checked against ``ReadLimits.max_bytes`` first. Peak memory is
the arrays in their stored dtype.
"""

from __future__ import annotations

import zipfile

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import SubmissionError
from psc6k.submission.model import (CONFIDENCE_FIELDS, DIRECTIONS, KINDS, MAX_STRING_CHARS, ReadLimits, Submission,
                                    SubmissionTooLarge, mb, one_line, short)

#: NPZ members above this count are not a submission (it has at most 8 arrays).
MAX_NPZ_MEMBERS = 32
#: ``.npy`` headers are a few hundred bytes; numpy itself refuses more than 10,000.
MAX_NPY_HEADER = 10_000
_NPZ_ARRAYS = ("photo", "sketch", *DIRECTIONS, "method", "kind", *CONFIDENCE_FIELDS.values())


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source):
    """``(shape, dtype, header_bytes)`` of one ``.npy`` member, reading only its header."""
    name = info.filename
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member, max_header_size=MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            header_len = member.tell()
    except Exception as exc:  # numpy / zipfile / zlib raise ValueError, BadZipFile, EOFError, zlib.error, ...
        raise SubmissionError(f"NPZ member {name!r} is not a readable .npy array ({one_line(exc)})",
                              source=source) from None
    if dtype.hasobject:
        raise SubmissionError(f"NPZ member {name!r} holds Python objects (dtype {dtype}), which need pickle; "
                              "use numeric and string arrays", source=source)
    if fortran and len(shape) > 1:
        raise SubmissionError(f"NPZ member {name!r} is stored in Fortran order; save "
                              "np.ascontiguousarray(...) instead", source=source)
    n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header_len + n_bytes != info.file_size:
        raise SubmissionError(f"NPZ member {name!r}: header says shape {list(shape)} of {dtype} ({n_bytes} bytes) "
                              f"but the member holds {info.file_size - header_len} bytes", source=source)
    return tuple(shape), dtype, n_bytes


def _check_npz_headers(headers: dict, source, limits: ReadLimits) -> str:
    """Dtypes and shapes of every member against the format and the limits; returns the kind."""
    for key in ("photo", "sketch"):
        shape, dtype, _ = headers[key]
        if dtype.kind not in "US" or len(shape) != 1:
            raise SubmissionError(f"expected a 1-D string array, got dtype {dtype} shape {list(shape)}",
                                  source=source, field=key)
        if dtype.itemsize > MAX_STRING_CHARS * (4 if dtype.kind == "U" else 1):
            raise SubmissionError(f"strings longer than {MAX_STRING_CHARS} characters", source=source, field=key)
    for key in ("method", "kind"):
        if key in headers:
            shape, dtype, _ = headers[key]
            if dtype.kind not in "US" or shape != ():
                raise SubmissionError(f"expected a 0-d string array, got dtype {dtype} shape {list(shape)}",
                                      source=source, field=key)
            if dtype.itemsize > MAX_STRING_CHARS * 4:
                raise SubmissionError(f"longer than {MAX_STRING_CHARS} characters", source=source, field=key)
    n = headers["photo"][0][0]
    if n > limits.max_pairs:
        raise SubmissionTooLarge(f"{n} pairs, over the limit of {limits.max_pairs} (scorers set it to the number of "
                                 "annotated pairs)", source=source, field="photo")
    numeric = [d for d in (*DIRECTIONS, *CONFIDENCE_FIELDS.values()) if d in headers]
    for key in numeric:
        shape, dtype, _ = headers[key]
        if not _is_float_dtype(dtype):
            raise SubmissionError(f"expected float16, float32 or float64 values, got dtype {dtype}"
                                  + (" (convert with .astype(np.float32))" if dtype.kind in "iub" else ""),
                                  source=source, field=key)
    s2p = headers["sketch_to_photo"][0]
    kind = None
    if "kind" in headers:
        kind = "declared"  # read after the headers; the shape rules are checked then
    elif len(s2p) == 3:
        kind = "keypoints"
    else:
        kind = "flow"
    for key in DIRECTIONS:
        shape = headers[key][0]
        if len(shape) == 4 and (shape[1] > limits.max_side or shape[2] > limits.max_side):
            raise SubmissionTooLarge(f"flows of {shape[1]} x {shape[2]} are over the limit of {limits.max_side} x "
                                     f"{limits.max_side}", source=source, field=key)
        if len(shape) not in (3, 4):
            raise SubmissionError(f"expected shape [N, H, W, 2] or [N, {NUM_KEYPOINTS}, 2], got {list(shape)}",
                                  source=source, field=key)
    return kind


def read_npz(fh, source, limits: ReadLimits) -> Submission:
    """Read an NPZ submission from a seekable binary stream (headers first, then the arrays)."""
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise SubmissionError(f"not a valid NPZ (zip) file ({one_line(exc)})", source=source) from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise SubmissionError("NPZ file is empty (no arrays)", source=source)
        if len(infos) > MAX_NPZ_MEMBERS:
            raise SubmissionError(f"NPZ file has {len(infos)} members; a submission has at most "
                                  f"{len(_NPZ_ARRAYS)} arrays", source=source)
        total = sum(info.file_size for info in infos)
        if total > limits.max_bytes:
            raise SubmissionTooLarge(f"NPZ members decompress to {mb(total)}, over the limit of "
                                     f"{mb(limits.max_bytes)}", source=source)
        members = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise SubmissionError(f"NPZ member {short(name)} is not a .npy array", source=source)
            if name[:-4] not in _NPZ_ARRAYS:
                raise SubmissionError(f"NPZ member {short(name)} is not part of a submission (expected "
                                      f"{', '.join(_NPZ_ARRAYS)})", source=source)
            if name[:-4] in members:
                raise SubmissionError(f"NPZ member {short(name)} appears twice", source=source)
            if info.flag_bits & 0x1:
                raise SubmissionError(f"NPZ member {short(name)} is encrypted", source=source)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise SubmissionError(f"NPZ member {short(name)} uses an unsupported compression (only stored and "
                                      "deflated, as numpy writes)", source=source)
            members[name[:-4]] = info
        missing = [k for k in ("photo", "sketch", *DIRECTIONS) if k not in members]
        if missing:
            raise SubmissionError(f"NPZ lacks arrays {missing}; expected photo, sketch, sketch_to_photo, "
                                  "photo_to_sketch (and optionally method, kind and the *_confidence arrays)",
                                  source=source)
        headers = {key: _npy_header(zf, info, source) for key, info in members.items()}
        kind = _check_npz_headers(headers, source, limits)
        arrays = {}
        for key, info in members.items():
            try:
                with zf.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
            except Exception as exc:
                raise SubmissionError(f"NPZ member {info.filename!r} is unreadable ({one_line(exc)})",
                                      source=source) from None
    photo, sketch = (_strings(arrays[k], source, k) for k in ("photo", "sketch"))
    method = _strings(arrays["method"], source, "method", allow_empty=True) if "method" in arrays else "unnamed"
    if kind == "declared":
        kind = _strings(arrays["kind"], source, "kind", allow_empty=True)
        if kind not in KINDS:
            raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {short(kind)}", source=source,
                                  field="kind")
    conf = [CONFIDENCE_FIELDS[d] in arrays for d in DIRECTIONS]
    if conf[0] != conf[1]:
        raise SubmissionError("both confidence arrays or neither", source=source,
                              field=CONFIDENCE_FIELDS[DIRECTIONS[conf.index(False)]])
    confidence = {d: arrays[CONFIDENCE_FIELDS[d]] for d in DIRECTIONS} if conf[0] else None
    return Submission(method, kind, photo, sketch, arrays["sketch_to_photo"], arrays["photo_to_sketch"], confidence)


def _strings(arr: np.ndarray, source, field: str, allow_empty: bool = False):
    """Python strings of a string array (a list for 1-D, a str for 0-d)."""
    try:
        values = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in np.atleast_1d(arr).tolist()]
    except UnicodeDecodeError:
        raise SubmissionError("strings are not valid UTF-8", source=source, field=field) from None
    if not allow_empty and not all(values):
        i = values.index("")
        raise SubmissionError(f"{field}[{i}] must be a non-empty string", source=source, field=field)
    return values if arr.ndim else values[0]




def _is_float_dtype(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.itemsize in (2, 4, 8)
