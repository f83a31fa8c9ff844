"""Submissions: what a method hands in to be scored (see ``docs/submission.md``).

Two containers hold the same content:

JSON ``{"psc6k_submission": 1, "method": str, "kind": "flow" | "keypoints", "pairs": [...]}``
    each pair ``{"photo", "sketch", "sketch_to_photo", "photo_to_sketch"}`` (flows optionally
    with ``"sketch_to_photo_confidence"``, ``"photo_to_sketch_confidence"``, ``H x W``); for
    ``flow`` the two fields are H x W x 2 nested lists (SPEC §5: normalised (u, v),
    ``align_corners=True``, laid on the source grid), for ``keypoints`` 8 x 2 lists of predicted
    pixel (x, y). May be gzipped.
NPZ  arrays ``photo``, ``sketch`` (str, N), ``sketch_to_photo``, ``photo_to_sketch`` (float16/32/64,
    ``[N, H, W, 2]`` or ``[N, 8, 2]``), optional ``method``, ``kind`` and the two
    ``*_confidence`` arrays ``[N, H, W]``; never unpickled.

This module is the one reader of submission bytes, used by ``psc6k eval`` and by the scoring
server alike (the server adds only HTTP concerns), so both accept and refuse the same files with
the same message.

Cost of reading untrusted bytes
-------------------------------
Nothing is materialised before it has been checked against :class:`ReadLimits`:

* JSON (plain or gzip) is parsed as a stream (``ijson``, yajl C backend): the decompressed text
  is never held, an unknown key is refused when the parser reaches it, and numbers go straight
  into preallocated blocks of float64, one pair of scratch at a time.
* NPZ: member names, count, encryption, compression and every ``.npy`` header (dtype, shape and
  the size the shape implies against the member's size) are read from the zip before any array
  data is inflated; the declared total is checked against ``max_bytes`` first.
* Values are validated block by block, so no full-size temporary is made.

Peak memory of :func:`load_submission` is therefore the arrays themselves — float64 for JSON
(2x the float32 size of the flows), the declared dtype for NPZ (at most 2x) — plus a fixed
overhead: one 64 MiB assembly block per array and one pair of parse scratch (measured in
``tests/test_hostile_submission.py`` and ``benchmarks/bench_server.py``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import SubmissionError, TooLargeError

SUBMISSION_VERSION = 1
KINDS = ("flow", "keypoints")
DIRECTIONS = ("sketch_to_photo", "photo_to_sketch")
#: Optional per-pixel confidence of each direction's flow (issue #15), ``[N, H, W]``.
CONFIDENCE_FIELDS = {d: f"{d}_confidence" for d in DIRECTIONS}
#: Largest magnitude accepted for any value. Flows outside [-1, 1] are legal (they miss), but
#: values this large are a bug in the submitter's code, and would overflow in float32 maths.
MAX_ABS_VALUE = 1e6
#: Default cap on what a submission may make us hold: decompressed JSON text, declared NPZ arrays.
DEFAULT_MAX_DECOMPRESSED = 8 * 1024**3
#: Default largest flow side (H and W); PSCNet gives 16, the images are 256.
MAX_FLOW_SIDE = 256
#: Default largest number of pairs (PSC6K has 6,250 test pairs).
MAX_PAIRS = 100_000
#: Longest string (photo / sketch path, method name) in characters.
MAX_STRING_CHARS = 1024
#: NPZ members above this count are not a submission (it has at most 8 arrays).
MAX_NPZ_MEMBERS = 32
#: ``.npy`` headers are a few hundred bytes; numpy itself refuses more than 10,000.
MAX_NPY_HEADER = 10_000
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: Arrays are assembled in blocks of this many bytes (a fixed overhead, never a full-size copy).
_BLOCK_BYTES = 64 * 1024**2
_READ_CHUNK = 1 << 16


class SubmissionTooLarge(SubmissionError, TooLargeError):
    """A submission declares (or decompresses to) more than the limits allow (HTTP 413)."""


@dataclass(frozen=True)
class ReadLimits:
    """What one submission may cost to read.

    Parameters
    ----------
    max_bytes : int
        Largest decompressed JSON text, and largest total of the arrays an NPZ declares, in bytes.
    max_side : int
        Largest flow height and width.
    max_pairs : int
        Largest number of pairs.
    """

    max_bytes: int = DEFAULT_MAX_DECOMPRESSED
    max_side: int = MAX_FLOW_SIDE
    max_pairs: int = MAX_PAIRS


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
    confidence : dict of str to ndarray, or None
        Flows only, optional: ``{"sketch_to_photo": [N, H, W], "photo_to_sketch": [N, H, W]}``,
        the method's confidence in each flow vector (higher = more confident; any finite float).
        Both directions or neither.
    """

    method: str
    kind: str
    photo: list
    sketch: list
    sketch_to_photo: np.ndarray
    photo_to_sketch: np.ndarray
    confidence: dict | None = None

    def __len__(self) -> int:
        return len(self.photo)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.photo, self.sketch))

    def to_json_dict(self) -> dict:
        pairs = []
        for i, (p, s) in enumerate(zip(self.photo, self.sketch)):
            entry = {"photo": p, "sketch": s, "sketch_to_photo": self.sketch_to_photo[i].tolist(),
                     "photo_to_sketch": self.photo_to_sketch[i].tolist()}
            if self.confidence is not None:
                for d in DIRECTIONS:
                    entry[CONFIDENCE_FIELDS[d]] = self.confidence[d][i].tolist()
            pairs.append(entry)
        return {"psc6k_submission": SUBMISSION_VERSION, "method": self.method, "kind": self.kind, "pairs": pairs}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


def _short(text, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[:limit] + "...'"


# --------------------------------------------------------------------------- validation
def _block_rows(arr: np.ndarray) -> int:
    per_row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * 8)
    return max(1, (16 * 1024**2) // per_row)


def _count_nonfinite_rows(block: np.ndarray) -> int:
    return int((~np.isfinite(block.reshape(len(block), -1))).any(axis=1).sum())


def _check_values(sub: Submission, source) -> None:
    """Shapes, dtypes, finiteness and magnitude of every array; errors name the pair and field.

    Scans in blocks of pairs so that no full-size temporary is made.
    """
    n = len(sub.photo)
    if n == 0:
        raise SubmissionError("no pairs (expected at least one)", source=source, field="pairs")
    if len(sub.sketch) != n:
        raise SubmissionError(f"{len(sub.photo)} photos but {len(sub.sketch)} sketches", source=source)
    if sub.kind not in KINDS:
        raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {_short(sub.kind)}", source=source,
                              field="kind")
    arrays = {d: getattr(sub, d) for d in DIRECTIONS}
    if sub.confidence is not None:
        if sub.kind != "flow":
            raise SubmissionError("confidence is only defined for flow submissions", source=source,
                                  field=CONFIDENCE_FIELDS["sketch_to_photo"])
        if set(sub.confidence) != set(DIRECTIONS):
            raise SubmissionError(f"confidence must give both directions {list(DIRECTIONS)} or neither, got "
                                  f"{sorted(map(str, sub.confidence))}", source=source,
                                  field=CONFIDENCE_FIELDS["sketch_to_photo"])
        arrays.update({CONFIDENCE_FIELDS[d]: sub.confidence[d] for d in DIRECTIONS})
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype not in FLOAT_DTYPES:
            raise SubmissionError(f"expected float16, float32 or float64 values, got dtype {arr.dtype}"
                                  + (" (convert with .astype(np.float32))" if arr.dtype.kind in "iub" else ""),
                                  source=source, field=name)
        if name in DIRECTIONS:
            if sub.kind == "flow":
                if arr.ndim != 4 or arr.shape[-1] != 2 or arr.shape[1] < 2 or arr.shape[2] < 2:
                    raise SubmissionError(f"expected shape [N, H, W, 2] with H, W >= 2, got {list(arr.shape)}",
                                          source=source, field=name)
            elif arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 2):
                raise SubmissionError(f"expected shape [N, {NUM_KEYPOINTS}, 2], got {list(arr.shape)}",
                                      source=source, field=name)
        else:
            flow = np.asarray(arrays[name[: -len("_confidence")]])
            if arr.shape != flow.shape[:-1]:
                raise SubmissionError(f"expected shape {list(flow.shape[:-1])} (the flow's [N, H, W]), got "
                                      f"{list(arr.shape)}", source=source, field=name)
        if arr.shape[0] != n:
            raise SubmissionError(f"has {arr.shape[0]} entries for {n} pairs", source=source, field=name)
        step = _block_rows(arr)
        for lo in range(0, n, step):
            block = arr[lo:lo + step].reshape(min(step, n - lo), -1)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                i = lo + int(np.flatnonzero(~finite)[0])
                total = sum(_count_nonfinite_rows(arr[k:k + step]) for k in range(0, n, step))
                raise SubmissionError(f"contains NaN or Inf ({total} pair(s) affected); all values must be finite",
                                      source=source, field=name, pair=(sub.photo[i], sub.sketch[i]))
            if arr.dtype.itemsize == 2:  # every finite float16 is within +-65504
                continue
            big = (block > MAX_ABS_VALUE).any(axis=1) | (block < -MAX_ABS_VALUE).any(axis=1)
            if big.any():
                i = lo + int(np.flatnonzero(big)[0])
                raise SubmissionError(f"contains values beyond +-{MAX_ABS_VALUE:g}; expected normalised flow "
                                      "values or pixel coordinates", source=source, field=name,
                                      pair=(sub.photo[i], sub.sketch[i]))
    a, b = np.asarray(sub.sketch_to_photo), np.asarray(sub.photo_to_sketch)
    if sub.kind == "flow" and a.shape != b.shape:
        raise SubmissionError(f"sketch_to_photo has shape {list(a.shape)} but photo_to_sketch "
                              f"{list(b.shape)}; all flows of a submission must share one size", source=source,
                              field="photo_to_sketch")
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(sub.photo, sub.sketch)):
        if pair in seen:
            raise SubmissionError(f"duplicate pair (entries {seen[pair]} and {i})", source=source, pair=pair)
        seen[pair] = i


def _is_float_dtype(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.itemsize in (2, 4, 8)


# --------------------------------------------------------------------------- reading: sources
#: A high surrogate escape not followed by a low one, or a low one not preceded by a high one.
_LONE_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


#: A double quote that is not escaped (preceded by an even run of backslashes).
_UNESCAPED_QUOTE = re.compile(rb'(?<!\\)(?:\\\\)*"')


class _CappedStream:
    """``read()`` of an underlying stream that refuses (SubmissionTooLarge) beyond ``limit``
    bytes, and as soon as the text could make the tokenizer buffer one huge token: a string
    longer than ``max_string`` bytes, or ``max_flat`` bytes without a bracket (a huge number, or
    a row of numbers no submission has). yajl buffers a token whole (and re-scans it as it grows),
    so these caps bound both its memory and its time."""

    def __init__(self, raw, limit: int, what: str, source, max_string: int = 1024**2, max_flat: int = 1024**2):
        self.raw, self.limit, self.what, self.source = raw, limit, what, source
        self.max_string, self.max_flat = max_string, max_flat
        self.count = 0
        self.in_string = False
        self.string_run = 0  # bytes of the string being read
        self.flat = 0  # bytes since the last bracket
        self.tail = b""  # end of the previous chunk (an escape may straddle two reads)

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        data = self.raw.read(n if n and n > 0 else _READ_CHUNK)
        self.count += len(data)
        if self.count > self.limit:
            raise SubmissionTooLarge(f"{self.what} decompresses to more than {_mb(self.limit)} (the limit)",
                                     source=self.source)
        if b"\\u" in data and _LONE_SURROGATE.search(self.tail + data):
            # yajl would silently merge a lone surrogate escape with the next one; Python would keep
            # text that is not Unicode. Either way it is not a valid JSON string.
            raise SubmissionError("JSON text holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); strings "
                                  "must be valid Unicode", source=self.source)
        self._track_strings(data)
        self.tail = data[-12:]
        # Rows of a submission are short (2 values, or W <= 256 confidences): a long stretch
        # without a bracket would make one row's scratch grow without bound.
        last = max(data.rfind(b"["), data.rfind(b"]"))
        self.flat = len(data) - 1 - last if last >= 0 else self.flat + len(data)
        if self.flat > self.max_flat:
            raise SubmissionTooLarge(f"JSON holds more than {_mb(self.max_flat)} without a bracket (no row of a "
                                     "submission is that long)", source=self.source)
        return data

    def _track_strings(self, data: bytes) -> None:
        if b'"' not in data:
            quotes = []
        else:
            # an odd run of backslashes at the end of the previous chunk escapes this chunk's first byte
            run = len(self.tail) - len(self.tail.rstrip(b"\\"))
            prefix = b"\\" if run % 2 else b""
            quotes = [m.end() - 1 - len(prefix) for m in _UNESCAPED_QUOTE.finditer(prefix + data)]
            quotes = [q for q in quotes if q >= 0]
        if quotes:
            self.in_string ^= len(quotes) % 2 == 1
            self.string_run = len(data) - 1 - quotes[-1] if self.in_string else 0
        elif self.in_string:
            self.string_run += len(data)
        if self.string_run > self.max_string:
            raise SubmissionTooLarge(f"JSON holds a string of more than {_mb(self.max_string)} (no string of a "
                                     "submission is that long)", source=self.source)


class _Source:
    """An open, seekable binary stream over a path, bytes or a file object, with its name."""

    def __init__(self, src, source, limits: ReadLimits):
        self.own = False
        self.size = None
        if isinstance(src, (bytes, bytearray, memoryview)):
            self.fh = io.BytesIO(src if isinstance(src, bytes) else bytes(src))
            self.name = source or "submission"
            self.size = len(src)
        elif hasattr(src, "read"):
            self.fh = src
            self.name = source or getattr(src, "name", None) or "submission"
            if not isinstance(self.name, str):
                self.name = "submission"
            if not (hasattr(src, "seekable") and src.seekable()):
                raise SubmissionError("the stream must be seekable", source=self.name)
        else:
            path = Path(src)
            self.name = source or str(path)
            try:
                st = os.stat(path)  # before open(): opening a FIFO would block
            except FileNotFoundError:
                raise SubmissionError("file not found", source=self.name) from None
            except OSError as exc:
                raise SubmissionError(f"cannot read the file ({exc.strerror or exc})", source=self.name) from None
            if stat.S_ISDIR(st.st_mode):
                raise SubmissionError("is a directory; expected a submission file (.npz, .json or .json.gz)",
                                      source=self.name)
            if not stat.S_ISREG(st.st_mode):
                raise SubmissionError("is not a regular file (a FIFO, socket or device?); expected a "
                                      "submission file", source=self.name)
            try:
                self.fh = open(path, "rb")
            except OSError as exc:
                raise SubmissionError(f"cannot read the file ({exc.strerror or exc})", source=self.name) from None
            self.own = True
            self.size = st.st_size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.own:
            self.fh.close()


# --------------------------------------------------------------------------- reading: arrays
class _Blocks:
    """Rows of one array, assembled in fixed-size blocks: appending never moves what is stored,
    and :meth:`finish` copies block by block, freeing each once copied (so the peak is the final
    array plus one block, never two full copies)."""

    def __init__(self, row_shape: tuple, max_rows: int):
        self.row_shape = tuple(row_shape)
        row_bytes = max(1, int(np.prod(self.row_shape, dtype=np.int64)) * 8)
        self.per_block = max(1, min(max_rows, _BLOCK_BYTES // row_bytes))
        self.blocks: list = []
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        k = self.n % self.per_block
        if k == 0:
            self.blocks.append(np.empty((self.per_block, *self.row_shape), np.float64))
        self.blocks[-1][k] = row
        self.n += 1

    def finish(self) -> np.ndarray:
        if len(self.blocks) == 1:  # the common case: no copy (the untouched tail is never resident)
            out, self.blocks = self.blocks[0][:self.n], []
            return out
        out = np.empty((self.n, *self.row_shape), np.float64)
        pos = 0
        for i in range(len(self.blocks)):
            m = min(self.per_block, self.n - pos)
            out[pos:pos + m] = self.blocks[i][:m]
            self.blocks[i] = None
            pos += m
        self.blocks = []
        return out


# --------------------------------------------------------------------------- reading: JSON
_TOP_KEYS = ("psc6k_submission", "method", "kind", "pairs")
_PAIR_KEYS = ("photo", "sketch", *DIRECTIONS, *CONFIDENCE_FIELDS.values())
_FOUND = {"boolean": "booleans", "string": "strings", "null": "null", "start_map": "an object",
          "map_key": "an object", "number": "a number", "start_array": "an array", "end_array": "an empty array"}


class _JsonReader:
    """One pass over a JSON submission's token stream (``ijson.basic_parse``); every value is
    checked as it arrives and an unexpected key or type stops the read at once."""

    def __init__(self, stream: _CappedStream, source, limits: ReadLimits):
        import ijson

        self.ijson = ijson
        self.stream, self.source, self.limits = stream, source, limits
        self.events = ijson.basic_parse(stream, use_float=True, buf_size=_READ_CHUNK)
        self.started = False
        self.where: dict = {}  # pair / field being read, for messages
        self.kind = None
        self.row_shape = None  # shape of one direction array (first pair's)
        self.has_confidence = None
        self.blocks: dict[str, _Blocks] = {}

    # -- helpers
    def error(self, message: str, cls=SubmissionError, **where) -> SubmissionError:
        return cls(message, source=self.source, **{**self.where, **where})

    def next(self):
        try:
            event = next(self.events)
        except StopIteration:
            raise self.error("the JSON text ends early (truncated?)") from None
        self.started = True
        return event

    # -- grammar
    def read(self) -> Submission:
        try:
            return self._document()
        except SubmissionError:
            raise
        except self.ijson.JSONError as exc:
            if not self.started and "premature EOF" in str(exc):
                raise self.error("empty submission (no JSON value)", pair=None, field=None) from None
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
            hint = ""
            if "invalid char" in text or "invalid string" in text or "lexical" in text:
                hint = " (NaN, Infinity and other non-JSON tokens are not allowed; all values must be finite numbers)"
            elif "overflow" in text:
                hint = " (a number is too large)"
            raise self.error(f"malformed JSON (within the first {self.stream.count} bytes): {text}{hint}") from None
        except EOFError:
            raise self.error("gzip data is truncated (the stream ends before the end of the gzip member)",
                             pair=None, field=None) from None
        except (zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise self.error(f"gzip data is corrupt ({exc})", pair=None, field=None) from None
        except ValueError as exc:  # e.g. an integer literal of thousands of digits
            raise self.error(f"unreadable JSON value ({exc})") from None
        except RecursionError:
            raise self.error("JSON nested too deeply") from None

    def _document(self) -> Submission:
        event, _ = self.next()
        if event != "start_map":
            raise self.error(f"expected a JSON object at the top level, got {_FOUND.get(event, event)}")
        seen: dict = {}
        while True:
            event, key = self.next()
            if event == "end_map":
                break
            if key not in _TOP_KEYS:
                raise self.error(f"unknown key {_short(key)}; a submission has only {', '.join(_TOP_KEYS)}")
            if key in seen:
                raise self.error(f"key {key!r} appears twice", field=key)
            seen[key] = self._pairs() if key == "pairs" else self._scalar(key)
        for _ in self.events:
            raise self.error("unexpected content after the JSON object")
        if "psc6k_submission" not in seen:
            raise self.error('missing "psc6k_submission": 1 (the format version)', field="psc6k_submission")
        if "kind" not in seen:
            raise self.error("missing (expected \"flow\" or \"keypoints\")", field="kind")
        if "pairs" not in seen:
            raise self.error("missing (expected a list of pairs)", field="pairs")
        self._check_kind(seen["kind"])
        photo, sketch = seen["pairs"]
        arrays = {name: blocks.finish() for name, blocks in self.blocks.items()}
        confidence = ({d: arrays[CONFIDENCE_FIELDS[d]] for d in DIRECTIONS} if self.has_confidence else None)
        return Submission(seen.get("method", "unnamed"), seen["kind"], photo, sketch, arrays["sketch_to_photo"],
                          arrays["photo_to_sketch"], confidence)

    def _scalar(self, key: str):
        event, value = self.next()
        if event == "boolean":
            event, value = "string", "true" if value else "false"
        if key == "psc6k_submission":
            if event == "number" and type(value) is int and value == SUBMISSION_VERSION:
                return value
            shown = _short(value) if event in ("number", "string") else _FOUND.get(event, event)
            raise self.error(f"unsupported format version {shown}; this scorer reads version "
                             f"{SUBMISSION_VERSION} (the integer)", field=key)
        if key == "kind":
            if event == "string" and value in KINDS:
                self.kind = value
                return value
            shown = _short(value) if event == "string" else _FOUND.get(event, event)
            raise self.error(f"expected \"flow\" or \"keypoints\", got {shown}", field=key)
        if event != "string":  # method
            raise self.error(f"expected a string, got {_FOUND.get(event, event)}", field=key)
        if len(value) > MAX_STRING_CHARS:
            raise self.error(f"longer than {MAX_STRING_CHARS} characters", field=key)
        return value

    def _pairs(self):
        event, _ = self.next()
        if event != "start_array":
            raise self.error(f"expected a list of pairs, got {_FOUND.get(event, event)}", field="pairs")
        photo, sketch = [], []
        seen: dict = {}
        while True:
            event, _ = self.next()
            if event == "end_array":
                break
            i = len(photo)
            if event != "start_map":
                raise self.error(f"pairs[{i}] is not an object (found {_FOUND.get(event, event)})", field="pairs")
            if i >= self.limits.max_pairs:
                raise self.error(f"more than {self.limits.max_pairs} pairs (the limit; scorers set it to the number "
                                 "of annotated pairs)", SubmissionTooLarge, field="pairs")
            p, s = self._pair(i)
            if (p, s) in seen:  # refused here, not after parsing thousands more
                raise self.error(f"duplicate pair (entries {seen[(p, s)]} and {i})", pair=(p, s), field=None)
            seen[(p, s)] = i
            photo.append(p)
            sketch.append(s)
            self.where = {}
        if not photo:
            raise self.error("no pairs (expected at least one)", field="pairs")
        return photo, sketch

    def _pair(self, i: int):
        values: dict = {}
        while True:
            event, key = self.next()
            if event == "end_map":
                break
            if key not in _PAIR_KEYS:
                raise self.error(f"pairs[{i}]: unknown key {_short(key)}; a pair has only {', '.join(_PAIR_KEYS)}")
            if key in values:
                raise self.error(f"pairs[{i}]: key {key!r} appears twice", field=key)
            if key in ("photo", "sketch"):
                event, value = self.next()
                if event != "string" or not value:
                    raise self.error(f"pairs[{i}].{key} must be a non-empty string", field=key)
                if len(value) > MAX_STRING_CHARS:
                    raise self.error(f"pairs[{i}].{key} is longer than {MAX_STRING_CHARS} characters", field=key)
                values[key] = value
                if "photo" in values and "sketch" in values:
                    self.where = {"pair": (values["photo"], values["sketch"])}
            else:
                outer = self.where
                self.where = {**outer, "field": key}
                values[key] = self._numbers(i, key)
                self.where = outer
        for key in ("photo", "sketch"):
            if key not in values:
                raise self.error(f"pairs[{i}].{key} must be a non-empty string", field=key)
        self.where = {"pair": (values["photo"], values["sketch"])}
        for d in DIRECTIONS:
            if d not in values:
                raise self.error(f"missing (pairs[{i}])", field=d)
        conf = [CONFIDENCE_FIELDS[d] in values for d in DIRECTIONS]
        if conf[0] != conf[1]:
            raise self.error(f"both confidence fields or neither (pairs[{i}])",
                             field=CONFIDENCE_FIELDS[DIRECTIONS[conf.index(False)]])
        if self.has_confidence is None:
            self.has_confidence = conf[0]
        elif self.has_confidence != conf[0]:
            raise self.error(f"confidence given for some pairs only (pairs[{i}]); give it for every pair or none",
                             field=CONFIDENCE_FIELDS["sketch_to_photo"])
        names = (*DIRECTIONS, *(CONFIDENCE_FIELDS.values() if self.has_confidence else ()))
        held = (i + 1) * sum(values[name].nbytes for name in names)
        if held > self.limits.max_bytes:
            raise self.error(f"the arrays of {i + 1} pairs take more than {_mb(self.limits.max_bytes)} "
                             "(the limit)", SubmissionTooLarge, pair=None)
        for name in names:
            arr = values[name]
            if name not in self.blocks:
                self.blocks[name] = _Blocks(arr.shape, self.limits.max_pairs)
            self.blocks[name].append(arr)
        return values["photo"], values["sketch"]

    def _numbers(self, i: int, name: str) -> np.ndarray:
        """One rectangular nested list of numbers -> float64 array, checked against the shape rules
        as soon as its brackets allow."""
        confidence = name not in DIRECTIONS
        max_depth = 2 if confidence else 3
        side = self.limits.max_side
        max_elems = side * side * (1 if confidence else 2)
        where = f" (pairs[{i}])"
        event, value = self.next()
        if event != "start_array":
            raise self.error(f"not a rectangular array of numbers (found {_FOUND.get(event, event)}){where}",
                             field=name)
        # Per level: (child arrays, numbers inside) of the first array closed there; every other
        # array at that level must match (rectangular), and a parent must hold exactly its
        # children's numbers (no number mixed in beside arrays). Numbers cost one append each.
        sig: list = [None] * max_depth
        children = [0] * max_depth
        start = [0] * max_depth
        level = 0
        flat: list = []
        add = flat.append
        for event, value in self.events:
            if event == "number":
                add(value)
                continue
            if event == "start_array":
                children[level] += 1
                level += 1
                if level >= max_depth:
                    raise self.error(f"not a rectangular array of numbers (nested too deep){where}", field=name)
                children[level] = 0
                start[level] = len(flat)
                continue
            if event != "end_array":
                raise self.error(f"not a rectangular array of numbers (found {_FOUND.get(event, event)}){where}",
                                 field=name)
            got = (children[level], len(flat) - start[level])
            if sig[level] is None:
                if got[0] and got[1] != got[0] * sig[level + 1][1]:
                    raise self.error(f"not a rectangular array of numbers (a nested mix){where}", field=name)
                sig[level] = got
            elif sig[level] != got:
                raise self.error(f"not a rectangular array of numbers (rows of different lengths){where}",
                                 field=name)
            if len(flat) > max_elems:
                raise self.error(f"more than {max_elems} values (flows are at most {side} x {side})",
                                 SubmissionTooLarge, field=name)
            if level == 0:
                break
            level -= 1
        dims = []
        for c, n in sig:
            dims.append(c or n)
            if not c:
                break
        dims = tuple(dims)
        try:
            arr = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise self.error(f"a number is too large for float64{where}", field=name) from None
        if arr.size != int(np.prod(dims, dtype=np.int64)):
            raise self.error(f"not a rectangular array of numbers{where}", field=name)
        arr = arr.reshape(dims)
        self._check_shape(arr.shape, i, name)
        return arr

    def _check_shape(self, shape: tuple, i: int, name: str) -> None:
        side = self.limits.max_side
        if name not in DIRECTIONS:
            if self.row_shape is None or len(self.row_shape) != 3:
                raise self.error(f"confidence is only defined for flows (H x W x 2 arrays) (pairs[{i}])", field=name)
            if shape != self.row_shape[:2]:
                raise self.error(f"expected shape {list(self.row_shape[:2])} (the flow's H x W), got {list(shape)}",
                                 field=name)
            return
        if self.kind == "keypoints" or (self.kind is None and len(shape) == 2):
            if shape != (NUM_KEYPOINTS, 2):
                raise self.error(f"expected shape [{NUM_KEYPOINTS}, 2], got {list(shape)}", field=name)
        elif len(shape) != 3 or shape[-1] != 2 or shape[0] < 2 or shape[1] < 2:
            raise self.error(f"expected an H x W x 2 array with H, W >= 2, got shape {list(shape)}", field=name)
        elif shape[0] > side or shape[1] > side:
            raise self.error(f"flow of {shape[0]} x {shape[1]} is over the limit of {side} x {side}",
                             SubmissionTooLarge, field=name)
        if self.row_shape is None:
            self.row_shape = shape
        elif shape != self.row_shape:
            raise self.error(f"shape {list(shape)} differs from the first pair's {list(self.row_shape)}; "
                             "all flows of a submission must share one size", field=name)

    def _check_kind(self, kind: str) -> None:
        shape = self.row_shape
        if kind == "keypoints" and shape != (NUM_KEYPOINTS, 2):
            raise self.error(f"expected shape [{NUM_KEYPOINTS}, 2], got {list(shape)}", field="sketch_to_photo")
        if kind == "flow" and len(shape) != 3:
            raise self.error(f"expected an H x W x 2 array with H, W >= 2, got shape {list(shape)}",
                             field="sketch_to_photo")


# --------------------------------------------------------------------------- reading: NPZ
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
        raise SubmissionError(f"NPZ member {name!r} is not a readable .npy array ({_one_line(exc)})",
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


def _one_line(exc) -> str:
    """A short, stable description of a read error (the same whatever the stream: file, bytes, spool)."""
    if isinstance(exc, (OSError, EOFError)) or "seek" in str(exc):
        return "truncated or corrupt data"
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


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


def _read_npz(fh, source, limits: ReadLimits) -> Submission:
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise SubmissionError(f"not a valid NPZ (zip) file ({_one_line(exc)})", source=source) from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise SubmissionError("NPZ file is empty (no arrays)", source=source)
        if len(infos) > MAX_NPZ_MEMBERS:
            raise SubmissionError(f"NPZ file has {len(infos)} members; a submission has at most "
                                  f"{len(_NPZ_ARRAYS)} arrays", source=source)
        total = sum(info.file_size for info in infos)
        if total > limits.max_bytes:
            raise SubmissionTooLarge(f"NPZ members decompress to {_mb(total)}, over the limit of "
                                     f"{_mb(limits.max_bytes)}", source=source)
        members = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise SubmissionError(f"NPZ member {_short(name)} is not a .npy array", source=source)
            if name[:-4] not in _NPZ_ARRAYS:
                raise SubmissionError(f"NPZ member {_short(name)} is not part of a submission (expected "
                                      f"{', '.join(_NPZ_ARRAYS)})", source=source)
            if name[:-4] in members:
                raise SubmissionError(f"NPZ member {_short(name)} appears twice", source=source)
            if info.flag_bits & 0x1:
                raise SubmissionError(f"NPZ member {_short(name)} is encrypted", source=source)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise SubmissionError(f"NPZ member {_short(name)} uses an unsupported compression (only stored and "
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
                raise SubmissionError(f"NPZ member {info.filename!r} is unreadable ({_one_line(exc)})",
                                      source=source) from None
    photo, sketch = (_strings(arrays[k], source, k) for k in ("photo", "sketch"))
    method = _strings(arrays["method"], source, "method", allow_empty=True) if "method" in arrays else "unnamed"
    if kind == "declared":
        kind = _strings(arrays["kind"], source, "kind", allow_empty=True)
        if kind not in KINDS:
            raise SubmissionError(f"expected \"flow\" or \"keypoints\", got {_short(kind)}", source=source,
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


# --------------------------------------------------------------------------- the reader
def load_submission(src, *, source=None, max_decompressed: int | None = None,
                    limits: ReadLimits | None = None) -> Submission:
    """Read and validate a submission from a path, raw bytes or a seekable binary file object.

    The container is recognised by its first bytes (NPZ = zip, gzip, else JSON), so a file's
    extension does not matter. Every check that :class:`ReadLimits` implies happens before the
    memory it would cost is allocated (see the module docstring for the peak).

    Parameters
    ----------
    src : path-like, bytes or binary file object
    source : str, optional
        Name used in error messages (defaults to the path).
    max_decompressed : int, optional
        Shortcut for ``limits.max_bytes``: largest decompressed JSON text / declared NPZ arrays.
    limits : ReadLimits, optional
        Caps on bytes, flow size and pair count (defaults: :class:`ReadLimits`).

    Raises
    ------
    SubmissionTooLarge
        Over a limit (the server answers 413).
    SubmissionError
        Anything else wrong, naming the pair and field at fault.
    """
    limits = limits or ReadLimits()
    if max_decompressed is not None:
        limits = ReadLimits(max_decompressed, limits.max_side, limits.max_pairs)
    with _Source(src, source, limits) as opened:
        name, fh = opened.name, opened.fh
        try:
            head = fh.read(4)
            fh.seek(0)
        except OSError as exc:
            raise SubmissionError(f"cannot read ({exc.strerror or exc})", source=name) from None
        if not head:
            raise SubmissionError("empty submission", source=name)
        if head.startswith(b"PK"):
            sub = _read_npz(fh, name, limits)
        elif head.startswith(GZIP_MAGIC):
            if opened.size is not None and opened.size > limits.max_bytes:
                raise SubmissionTooLarge(f"file of {_mb(opened.size)} is over the limit of {_mb(limits.max_bytes)}",
                                         source=name)
            gz = gzip.GzipFile(fileobj=fh, mode="rb")
            try:
                inner = gz.peek(4)[:4]
            except EOFError:
                raise SubmissionError("gzip data is truncated (the stream ends before the end of the gzip member)",
                                      source=name) from None
            except (zlib.error, OSError) as exc:
                raise SubmissionError(f"gzip data is corrupt ({_one_line(exc)})", source=name) from None
            if inner.lstrip()[:1] not in b'{["-0123456789tfn' and not inner.startswith((GZIP_MAGIC, b"PK")):
                raise SubmissionError("gzip data that is not JSON (unrecognised bytes)", source=name)
            if inner.startswith(GZIP_MAGIC) or inner.startswith(b"PK"):
                what = "gzip data" if inner.startswith(GZIP_MAGIC) else "an NPZ"
                raise SubmissionError(f"gzip data holds {what}; compress JSON once, and store NPZ as it is "
                                      "(np.savez_compressed compresses inside)", source=name)
            sub = _JsonReader(_CappedStream(gz, limits.max_bytes, "gzip data", name), name, limits).read()
        else:
            first = head.lstrip()[:1]
            if first and first not in b'{["-0123456789tfn':
                raise SubmissionError("not JSON, gzip JSON or NPZ (unrecognised bytes)", source=name)
            if opened.size is not None and opened.size > limits.max_bytes:
                raise SubmissionTooLarge(f"JSON text of {_mb(opened.size)} is over the limit of "
                                         f"{_mb(limits.max_bytes)}", source=name)
            sub = _JsonReader(_CappedStream(fh, limits.max_bytes, "JSON text", name), name, limits).read()
    _check_values(sub, name)
    return sub


def save_submission(sub: Submission, path, *, compress: bool = False) -> Path:
    """Write a submission; ``.npz`` -> NPZ, ``.json`` -> JSON, ``.json.gz`` -> gzip JSON.

    NPZ is stored uncompressed by default: scoring a full-size NPZ is then mostly a memory copy.
    The optional ``confidence`` arrays are written as ``*_confidence`` (NPZ arrays / JSON pair keys).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_values(sub, str(path))
    name = path.name.lower()
    if name.endswith(".npz"):
        save = np.savez_compressed if compress else np.savez
        extra = ({CONFIDENCE_FIELDS[d]: np.asarray(sub.confidence[d]) for d in DIRECTIONS}
                 if sub.confidence is not None else {})
        with open(path, "wb") as fh:
            save(fh, photo=np.array(sub.photo, dtype=str), sketch=np.array(sub.sketch, dtype=str),
                 sketch_to_photo=np.ascontiguousarray(sub.sketch_to_photo),
                 photo_to_sketch=np.ascontiguousarray(sub.photo_to_sketch),
                 method=np.array(sub.method), kind=np.array(sub.kind), **extra)
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
                              f"{' ...' if len(missing) > 3 else ''} (`allow_partial` scores the rest)", param="allow_partial")
    return ann_idx, sub_idx


def identity_flow(n: int, size: int = 16) -> np.ndarray:
    """``[n, size, size, 2]`` identity flow in the SPEC §5 convention (every pixel maps to itself)."""
    lin = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(lin, lin, indexing="xy"), axis=-1)
    return np.broadcast_to(grid, (n, size, size, 2)).copy()
