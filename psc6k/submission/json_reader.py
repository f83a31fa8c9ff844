"""The JSON reader: a submission's text, read in 1 MiB chunks, numbers decoded by msgspec.

The document's skeleton — the top-level object, the ``pairs`` array, each pair's keys and its
path strings — is read token by token (a few tokens a pair), so an unknown key, a wrong type or a
duplicate is refused as soon as the reader reaches it, before its value is read. Each flow
(``H x W x 2``), keypoint (``8 x 2``) or confidence (``H x W``) array is then taken whole:

* its text is bounded before it is decoded: at most :data:`BYTES_PER_VALUE` bytes a value
  (``64 KiB`` more for the brackets) of the largest array :class:`ReadLimits` allows;
* fast path (every pair after the first): the array's end is found by its closing brackets, its
  brackets and commas must be exactly those of the first pair's shape (so only number bytes are
  left between them), and all the numbers of a pair are decoded by one ``msgspec`` call as one
  flat list — strict JSON numbers, correctly rounded to float64 (the same bits as ``float()`` /
  ``json.loads``) — then copied into preallocated float64 blocks;
* exact path (the first pair, and any array the fast path does not take): a bracket scan with a
  bounded count of arrays and values, a generic decode, then a check that names what is wrong
  (strings, booleans, null, ragged rows, a nested mix, a shape).

Peak memory: the float64 arrays (assembled in 64 MiB blocks), the text buffer (about 2 MiB, or
one array's bounded text), and one pair's decoded numbers.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib

import msgspec
import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import SubmissionError
from psc6k.submission.model import (CONFIDENCE_FIELDS, DIRECTIONS, KINDS, MAX_STRING_CHARS, SUBMISSION_VERSION,
                                    ReadLimits, Submission, SubmissionTooLarge, mb, short)

#: Bytes read from the stream at a time.
CHUNK_BYTES = 1 << 20
#: Longest string or number token of the skeleton, in bytes (a path is at most 1,024 characters).
MAX_TOKEN_BYTES = 1 << 20
#: Budget of JSON text per number of an array (the number, its comma, brackets and indentation:
#: ``json.dumps(indent=4)`` of a flow takes about 46).
BYTES_PER_VALUE = 64
#: Arrays are assembled in blocks of this many bytes (a fixed overhead, never a full-size copy).
BLOCK_BYTES = 64 * 1024**2

TOP_KEYS = ("psc6k_submission", "method", "kind", "pairs")
PAIR_KEYS = ("photo", "sketch", *DIRECTIONS, *CONFIDENCE_FIELDS.values())

_KEYS = {f'"{k}"'.encode(): k for k in (*TOP_KEYS, *PAIR_KEYS)}
_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERAL = re.compile(rb"true|false|null")
_BRACKETS = re.compile(rb'[\[\]{}"]')
#: The closing brackets of a rank-2 / rank-3 array: the first such run ends a valid one.
_CLOSE = {2: re.compile(rb"\][ \t\n\r]*\]"), 3: re.compile(rb"\][ \t\n\r]*\][ \t\n\r]*\]")}
#: Brackets become whitespace (a table translate: twice as fast as deleting them).
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
#: What a number token may hold (and JSON whitespace): deleting these leaves brackets and commas.
_NUMBER_BYTES = b"0123456789.-+eE \t\n\r"
#: A high surrogate escape not followed by a low one, or a low one not preceded by a high one.
_LONE_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_FOUND_VALUE = {bool: "booleans", str: "strings", type(None): "null", dict: "an object"}
_HINT_NON_JSON = " (NaN, Infinity and other non-JSON tokens are not allowed; all values must be finite numbers)"

_decode_string = msgspec.json.Decoder(str).decode
#: Untyped: twice as fast as ``list[float]``; callers admit only number bytes, or say what else.
_decode_any = msgspec.json.Decoder().decode


class CappedStream:
    """``read()`` of an underlying binary stream that refuses (:class:`SubmissionTooLarge`) beyond
    ``limit`` bytes, and refuses a lone UTF-16 surrogate escape (not Unicode) wherever it is."""

    def __init__(self, raw, limit: int, what: str, source):
        self.raw, self.limit, self.what, self.source = raw, limit, what, source
        self.count = 0
        self.tail = b""  # end of the previous chunk (an escape pair may straddle two reads)

    def read(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise SubmissionTooLarge(f"{self.what} decompresses to more than {mb(self.limit)} (the limit)",
                                     source=self.source)
        probe = self.tail + data
        if probe.find(b"\\") >= 0 and b"\\u" in probe:  # find(one byte) is memchr; "in" is not
            # A match ending in the tail's first 12 bytes was judged with the previous chunk; one
            # ending in the last 6 bytes is judged with the next (its partner may follow).
            for m in _LONE_SURROGATE.finditer(probe):
                if 12 < m.end() <= len(probe) - 6 or (not data and m.end() > 12):
                    raise SubmissionError("JSON text holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); "
                                          "strings must be valid Unicode", source=self.source)
        self.tail = probe[-18:]
        return data


class _Blocks:
    """Flat rows of one array, assembled in fixed-size blocks: appending never moves what is
    stored, and :meth:`finish` copies block by block, freeing each once copied (so the peak is
    the final array plus one block, never two full copies)."""

    def __init__(self, row_shape: tuple, max_rows: int):
        self.row_shape = tuple(row_shape)
        self.row_size = max(1, int(np.prod(self.row_shape, dtype=np.int64)))
        self.per_block = max(1, min(max_rows, BLOCK_BYTES // (self.row_size * 8)))
        self.blocks: list = []
        self.n = 0

    def append(self, row) -> None:
        """Store one row: an array of ``row_shape`` or a flat sequence of its numbers."""
        k = self.n % self.per_block
        if k == 0:
            self.blocks.append(np.empty((self.per_block, self.row_size), np.float64))
        self.blocks[-1][k] = np.ravel(row) if isinstance(row, np.ndarray) else np.fromiter(row, np.float64,
                                                                                            self.row_size)
        self.n += 1

    def finish(self) -> np.ndarray:
        if len(self.blocks) == 1:  # the common case: no copy (the untouched tail is never resident)
            out, self.blocks = self.blocks[0][:self.n], []
            return out.reshape(self.n, *self.row_shape)
        out = np.empty((self.n, self.row_size), np.float64)
        pos = 0
        for i in range(len(self.blocks)):
            m = min(self.per_block, self.n - pos)
            out[pos:pos + m] = self.blocks[i][:m]
            self.blocks[i] = None
            pos += m
        self.blocks = []
        return out.reshape(self.n, *self.row_shape)


def structure(shape: tuple) -> bytes:
    """The brackets and commas of a JSON array of ``shape`` (what remains without numbers)."""
    if len(shape) == 1:
        return b"[" + b"," * max(shape[0] - 1, 0) + b"]"
    return b"[" + b",".join([structure(shape[1:])] * shape[0]) + b"]"


def nested_shape(value) -> tuple:
    """Shape of a rectangular nested list of JSON numbers.

    Raises
    ------
    ValueError
        Naming what is not: ``"found booleans"`` (strings, null, an object), ``"a nested mix"``
        (numbers beside arrays), ``"rows of different lengths"``.
    """
    shape, level = [], [value]
    while True:
        types = {type(x) for x in level}
        if types == {list}:
            lengths = {len(x) for x in level}
            if len(lengths) > 1:
                raise ValueError("rows of different lengths")
            shape.append(lengths.pop())
            level = [y for x in level for y in x]
            if not level:
                return tuple(shape)
            continue
        if list in types:
            raise ValueError("a nested mix")
        for t in (bool, str, type(None), dict):
            if t in types:
                raise ValueError(f"found {_FOUND_VALUE[t]}")
        return tuple(shape)


class JsonReader:
    """One pass over a JSON submission's text; every token is checked as it arrives and an
    unexpected key or type stops the read at once.

    Parameters
    ----------
    stream : CappedStream
        The decompressed text (``read(n)``).
    source : str
        Name used in error messages.
    limits : ReadLimits
    """

    def __init__(self, stream: CappedStream, source, limits: ReadLimits):
        self.stream, self.source, self.limits = stream, source, limits
        self.buf, self.pos, self.offset, self.eof = b"", 0, 0, False
        self.where: dict = {}  # pair / field being read, for messages
        self.kind = None
        self.row_shape = None  # shape of one direction array (first pair's)
        self.has_confidence = None
        self.blocks: dict[str, _Blocks] = {}
        self.expected: dict[str, tuple] = {}  # field -> (rank, structure bytes) of the fast path
        self.lengths: dict[str, int] = {}  # field -> length of its last array's text
        side = limits.max_side
        self.max_arrays = 1 + side + side * side
        self.max_values = {d: max(side * side * 2, NUM_KEYPOINTS * 2) for d in DIRECTIONS}
        self.max_values.update({CONFIDENCE_FIELDS[d]: side * side for d in DIRECTIONS})

    # -- errors
    def error(self, message: str, cls=SubmissionError, **where) -> SubmissionError:
        return cls(message, source=self.source, **{**self.where, **where})

    def malformed(self, what: str, hint: str = "", at: int | None = None) -> SubmissionError:
        """Malformed JSON at byte ``at`` of the text (default: where the reader is)."""
        return self.error(f"malformed JSON at byte {self.offset + self.pos if at is None else at}: {what}{hint}")

    def truncated(self) -> SubmissionError:
        return self.error(f"malformed JSON: the text ends early, at byte {self.offset + len(self.buf)} "
                          "(truncated?)")

    # -- the text
    def fill(self, n: int) -> int:
        """Make ``n`` bytes available after ``pos`` (fewer only at the end); returns how many are."""
        while len(self.buf) - self.pos < n and not self.eof:
            data = self.stream.read(max(CHUNK_BYTES, n - (len(self.buf) - self.pos)))
            if not data:
                self.eof = True
                break
            self.offset += self.pos
            self.buf, self.pos = self.buf[self.pos:] + data, 0
        return len(self.buf) - self.pos

    def peek(self) -> bytes:
        """The next byte that is not whitespace (``b""`` at the end), not consumed."""
        c = self.buf[self.pos:self.pos + 1]
        if c and c not in b" \t\n\r":  # compact JSON: no whitespace to skip
            return c
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.fill(1):
                return self.buf[self.pos:self.pos + 1]

    def expect(self, char: bytes) -> None:
        if self.buf[self.pos:self.pos + 1] == char:
            self.pos += 1
            return
        got = self.peek()
        if got != char:
            if not got:
                raise self.truncated()
            raise self.malformed(f"expected {char.decode()!r}, found {got.decode('latin-1')!r}")
        self.pos += 1

    def token(self):
        """The next value's ``(type, value)``: ``("string", str)``, ``("number", bytes)``,
        ``("boolean", bool)``, ``("null", None)``; ``("object" | "array", None)`` unconsumed."""
        c = self.peek()
        if not c:
            raise self.truncated()
        if c in b"{[":
            return ("object" if c == b"{" else "array"), None
        if c == b'"':
            end = self._string_end()
            try:
                value = _decode_string(self.buf[self.pos:end])
            except msgspec.DecodeError as exc:
                raise self._decode_error(exc, "", self.offset + self.pos) from None
            self.pos = end
            return "string", value
        m = _NUMBER.match(self.buf, self.pos) or _LITERAL.match(self.buf, self.pos)
        if m is None or m.end() == len(self.buf):  # at the buffer's end: the token may go on
            self.fill(MAX_TOKEN_BYTES + 2)
            m = _NUMBER.match(self.buf, self.pos) or _LITERAL.match(self.buf, self.pos)
            if m is not None and m.end() - self.pos > MAX_TOKEN_BYTES:
                raise self.error(f"JSON holds a number of more than {mb(MAX_TOKEN_BYTES)}", SubmissionTooLarge)
        if m is None:
            hint = _HINT_NON_JSON if c in b"NIi+." else ""
            raise self.malformed(f"invalid character {c.decode('latin-1')!r}", hint)
        text, self.pos = m.group(), m.end()
        if c in b"tf":
            return "boolean", text == b"true"
        if c == b"n":
            return "null", None
        return "number", text

    def _string_end(self) -> int:
        """End (after the closing quote) of the string token at ``pos``, at most
        :data:`MAX_TOKEN_BYTES` long; its content (escapes, control characters, UTF-8) is checked
        when it is decoded. A plain search, not a regex: ``re`` keeps a frame per repetition."""
        quote = self.pos
        while True:
            quote = self.buf.find(b'"', quote + 1, self.pos + MAX_TOKEN_BYTES + 2)
            if quote < 0:
                available = len(self.buf) - self.pos
                if available >= MAX_TOKEN_BYTES + 2:
                    raise self.error(f"JSON holds a string of more than {mb(MAX_TOKEN_BYTES)} (no string of a "
                                     "submission is that long)", SubmissionTooLarge)
                if self.eof:
                    raise self.truncated()
                self.fill(available + CHUNK_BYTES)  # may move the text: search again from pos
                quote = self.pos
                continue
            k = quote - 1  # an odd run of backslashes escapes the quote
            while self.buf[k] == 0x5C:
                k -= 1
            if (quote - 1 - k) % 2 == 0:
                return quote + 1

    def key(self) -> str:
        if self.peek() == b'"':  # the keys of the format, without decoding them
            end = self._string_end()
            value = _KEYS.get(self.buf[self.pos:end])
            if value is not None:
                self.pos = end
                self.expect(b":")
                return value
        kind, value = self.token()
        if kind != "string":
            raise self.malformed(f"expected a key (a string), found {kind}")
        self.expect(b":")
        return value

    def members(self, allowed: tuple, prefix: str, noun: str):
        """Keys of the object at ``pos`` (its ``{`` already consumed), each before its value; an
        unknown or repeated key is refused there (``prefix`` starts those messages)."""
        if self.peek() == b"}":
            self.pos += 1
            return
        seen = set()
        while True:
            key = self.key()
            if key not in allowed:
                raise self.error(f"{prefix}unknown key {short(key)}; {noun} has only {', '.join(allowed)}")
            if key in seen:
                raise self.error(f"{prefix}key {key!r} appears twice", field=key)
            seen.add(key)
            yield key
            c = self.peek()
            self.expect(b"," if c != b"}" else b"}")
            if c == b"}":
                return

    # -- grammar
    def read(self) -> Submission:
        try:
            return self._document()
        except SubmissionError:
            raise
        except EOFError:
            raise self.error("gzip data is truncated (the stream ends before the end of the gzip member)",
                             pair=None, field=None) from None
        except (zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise self.error(f"gzip data is corrupt ({exc})", pair=None, field=None) from None

    def _document(self) -> Submission:
        c = self.peek()
        if not c:
            raise self.error("empty submission (no JSON value)")
        if c != b"{":
            kind, _ = self.token()
            raise self.error(f"expected a JSON object at the top level, got {_found(kind)}")
        self.pos += 1
        seen: dict = {}
        for key in self.members(TOP_KEYS, "", "a submission"):
            seen[key] = self._pairs() if key == "pairs" else self._scalar(key)
        if self.peek():
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
        kind, value = self.token()
        if kind == "boolean":
            kind, value = "string", "true" if value else "false"
        if key == "psc6k_submission":
            if kind == "number" and value == b"%d" % SUBMISSION_VERSION:
                return SUBMISSION_VERSION
            if kind == "number" and len(value.lstrip(b"-")) > 20 and value.lstrip(b"-").isdigit():
                raise self.error("a number is too large (an integer beyond 64 bits)", field=key)
            shown = value.decode()[:60] if kind == "number" else short(value) if kind == "string" else _found(kind)
            raise self.error(f"unsupported format version {shown}; this scorer reads version "
                             f"{SUBMISSION_VERSION} (the integer)", field=key)
        if key == "kind":
            if kind == "string" and value in KINDS:
                self.kind = value
                return value
            shown = short(value) if kind == "string" else _found(kind)
            raise self.error(f"expected \"flow\" or \"keypoints\", got {shown}", field=key)
        if kind != "string":  # method
            raise self.error(f"expected a string, got {_found(kind)}", field=key)
        if len(value) > MAX_STRING_CHARS:
            raise self.error(f"longer than {MAX_STRING_CHARS} characters", field=key)
        return value

    def _pairs(self):
        kind, _ = self.token()
        if kind != "array":
            raise self.error(f"expected a list of pairs, got {_found(kind)}", field="pairs")
        self.pos += 1
        photo, sketch = [], []
        seen: dict = {}
        if self.peek() == b"]":
            raise self.error("no pairs (expected at least one)", field="pairs")
        while True:
            i = len(photo)
            kind, _ = self.token()
            if kind != "object":
                raise self.error(f"pairs[{i}] is not an object (found {_found(kind)})", field="pairs")
            if i >= self.limits.max_pairs:
                raise self.error(f"more than {self.limits.max_pairs} pairs (the limit; scorers set it to the number "
                                 "of annotated pairs)", SubmissionTooLarge, field="pairs")
            self.pos += 1
            p, s = self._pair(i)
            if (p, s) in seen:  # refused here, not after parsing thousands more
                raise self.error(f"duplicate pair (entries {seen[(p, s)]} and {i})", pair=(p, s), field=None)
            seen[(p, s)] = i
            photo.append(p)
            sketch.append(s)
            self.where = {}
            if self.peek() == b"]":
                self.pos += 1
                return photo, sketch
            self.expect(b",")

    def _pair(self, i: int):
        values: dict = {}
        for key in self.members(PAIR_KEYS, f"pairs[{i}]: ", "a pair"):
            if key in ("photo", "sketch"):
                kind, value = self.token()
                if kind != "string" or not value:
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
        self._decode_pending(i, values)
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
        held = (i + 1) * sum(values[name][1] for name in names) * 8
        if held > self.limits.max_bytes:
            raise self.error(f"the arrays of {i + 1} pairs take more than {mb(self.limits.max_bytes)} "
                             "(the limit)", SubmissionTooLarge, pair=None)
        for name in names:
            shape, _, row = values[name]
            if name not in self.blocks:
                self.blocks[name] = _Blocks(shape, self.limits.max_pairs)
            self.blocks[name].append(row)
        return values["photo"], values["sketch"]

    # -- arrays
    def _numbers(self, i: int, name: str):
        """One rectangular nested list of numbers -> ``(shape, size, values)``, checked against the
        shape rules; ``values`` is a float64 array, or ``(text, at)`` for :meth:`_decode_pending`."""
        where = f" (pairs[{i}])"
        kind, _ = self.token()
        if kind != "array":
            raise self.error(f"not a rectangular array of numbers (found {_found(kind)}){where}", field=name)
        cap = 64 * 1024 + BYTES_PER_VALUE * self.max_values[name]
        if name in self.expected:
            got = self._fast_numbers(name, cap)
            if got is not None:
                return got
        arr = self._exact_numbers(i, name, cap)
        self._check_shape(arr.shape, i, name)
        shape = self.row_shape if name in DIRECTIONS else self.row_shape[:2]
        self.expected[name] = (len(shape), structure(shape))
        return shape, arr.size, arr

    def _fast_numbers(self, name: str, cap: int):
        """The common case: the array closes where its last brackets are, and has exactly the
        brackets and commas of the first pair's; ``None`` when not (the exact path decides)."""
        rank, expected = self.expected[name]
        close, end = _CLOSE[rank], None
        want = len(expected) * 2
        # Only a valid array's end closes all its brackets at once; searching from 3/4 of the last
        # array's length skips most of the text (a search that starts past the end finds a later
        # run, whose text then fails the structure check).
        skip = self.lengths.get(name, 0) * 3 // 4
        while end is None:
            available = self.fill(min(want, cap))  # may move the text: search from self.pos
            m = close.search(self.buf, self.pos + min(skip, available), self.pos + min(available, cap))
            if m is not None:
                end = m.end()
            elif available >= cap or self.eof:
                return None
            else:
                want = available * 2
        text = self.buf[self.pos:end]
        if text.translate(None, _NUMBER_BYTES) != expected:
            self.lengths[name] = 0
            return None
        self.lengths[name] = len(text)
        at, self.pos = self.offset + self.pos, end
        shape = self.row_shape if name in DIRECTIONS else self.row_shape[:2]
        return shape, math.prod(shape), (text, at)

    def _decode_pending(self, i: int, values: dict) -> None:
        """Decode the numbers of every array of one pair that the fast path took, in one msgspec
        call (strict JSON numbers, correctly rounded); on failure, the first array at fault says
        what is wrong. Replaces each ``(text, at)`` by its float64 values."""
        pending = [k for k, v in values.items() if isinstance(v, tuple) and isinstance(v[2], tuple)]
        if not pending:
            return
        try:  # the structure check left only number bytes and commas: numbers or an error
            flat = _decode_any(b"[" + b",".join(values[k][2][0] for k in pending).translate(_BRACKETS_TO_SPACES)
                               + b"]")
            numbers = np.fromiter(flat, np.float64, len(flat))  # ints as float(): correctly rounded
        except (msgspec.MsgspecError, OverflowError):
            for k in pending:
                self.where = {**self.where, "field": k}
                self._parse_exact(*values[k][2], i, k)
            raise self.malformed(f"the numbers of pairs[{i}] do not decode", at=values[pending[0]][2][1]) from None
        start = 0
        for k in pending:
            shape, size, _ = values[k]
            values[k] = shape, size, numbers[start:start + size]
            start += size

    def _exact_numbers(self, i: int, name: str, cap: int) -> np.ndarray:
        """Find the array's end by its brackets (bounded in text, arrays and values), decode it and
        say exactly what is wrong with it, if anything."""
        where = f" (pairs[{i}])"
        max_depth = 2 if name not in DIRECTIONS else 3
        available = self.fill(cap + 1)
        depth, arrays, end = 0, 0, None
        for m in _BRACKETS.finditer(self.buf, self.pos, self.pos + min(available, cap)):
            c = self.buf[m.start()]
            if c == 0x5B:  # [
                depth += 1
                arrays += 1
                if depth > max_depth:
                    raise self.error(f"not a rectangular array of numbers (nested too deep){where}", field=name)
                if arrays > self.max_arrays:
                    raise self.error(f"more than {self.max_arrays} arrays (flows are at most {self.limits.max_side} "
                                     f"x {self.limits.max_side})", SubmissionTooLarge, field=name)
            elif c == 0x5D:  # ]
                depth -= 1
                if depth == 0:
                    end = m.end()
                    break
            elif c == 0x22:  # "
                raise self.error(f"not a rectangular array of numbers (found strings){where}", field=name)
            else:
                self.pos = m.start()
                if c == 0x7B:
                    raise self.error(f"not a rectangular array of numbers (found an object){where}", field=name)
                raise self.malformed("'}' closes an array")
        if end is None:
            if available > cap:
                raise self.error(f"the JSON text of one array is over {mb(cap)} (at most {self.max_values[name]} "
                                 f"values, {BYTES_PER_VALUE} bytes of text each)", SubmissionTooLarge, field=name)
            raise self.truncated()
        arr = self._parse_exact(self.buf[self.pos:end], self.offset + self.pos, i, name)
        self.pos = end
        return arr

    def _parse_exact(self, text: bytes, at: int, i: int, name: str) -> np.ndarray:
        """One array's complete text (starting at byte ``at``) -> float64 array of its shape, or
        the error that says exactly what is wrong: bounded counts first, then a generic decode."""
        where = f" (pairs[{i}])"
        max_values = self.max_values[name]
        if text.count(b",") >= max_values + self.max_arrays:
            raise self.error(f"more than {max_values} values (flows are at most {self.limits.max_side} x "
                             f"{self.limits.max_side})", SubmissionTooLarge, field=name)
        try:
            value = _decode_any(text)
        except msgspec.MsgspecError as exc:
            raise self._decode_error(exc, where, at) from None
        try:
            shape = nested_shape(value)
        except ValueError as exc:
            raise self.error(f"not a rectangular array of numbers ({exc}){where}", field=name) from None
        if int(np.prod(shape, dtype=np.int64)) > max_values:
            raise self.error(f"more than {max_values} values (flows are at most {self.limits.max_side} x "
                             f"{self.limits.max_side})", SubmissionTooLarge, field=name)
        try:
            arr = np.array(value, dtype=np.float64)
        except OverflowError:
            raise self.error(f"a number is too large for float64{where}", field=name) from None
        return arr.reshape(shape)

    def _decode_error(self, exc, where: str, at: int) -> SubmissionError:
        """A msgspec error on text that starts at byte ``at`` -> one line naming the byte."""
        text = str(exc)
        if "out of range" in text:
            return self.error(f"a number is too large for float64{where}")
        byte = re.search(r"\(byte (\d+)\)", text)
        what = re.sub(r"^JSON is malformed: ", "", text.split(" - at")[0])
        what = re.sub(r"\s*\(byte \d+\)", "", what)
        hint = _HINT_NON_JSON if "invalid character" in what else ""
        return self.malformed(what, hint, at + int(byte.group(1)) if byte else at)

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


def _found(kind: str) -> str:
    return {"string": "strings", "number": "a number", "boolean": "booleans", "null": "null",
            "object": "an object", "array": "an array"}.get(kind, kind)
