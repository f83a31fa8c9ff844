"""The JSON reader (psc6k/submission/json_reader.py) against independent references: Python's
``float()`` / ``json.loads`` for every number, the exact path for every array the fast path takes,
and the bounds it promises (tokens, one array's text, chunk boundaries)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from psc6k.errors import SubmissionError
from psc6k.submission import ReadLimits, Submission, SubmissionTooLarge, identity_flow, load_submission
from psc6k.submission import json_reader
from psc6k.submission.json_reader import BYTES_PER_VALUE, CHUNK_BYTES, JsonReader, nested_shape, structure


def _pair(i, s2p, p2s, **extra):
    return {"photo": f"a/photo/x/cat/{i}.jpg", "sketch": f"a/sketch/x/cat/{i}-1.png", "sketch_to_photo": s2p,
            "photo_to_sketch": p2s, **extra}


def _doc(pairs, kind="flow", **extra):
    return {"psc6k_submission": 1, "method": "m", "kind": kind, "pairs": pairs, **extra}


def _flows(n, h=4, w=5, seed=0):
    return np.random.default_rng(seed).normal(0, 0.5, (n, h, w, 2))


def _text(doc, **dumps) -> bytes:
    return json.dumps(doc, **dumps).encode()


def _reference(text: bytes, field: str) -> np.ndarray:
    return np.array([p[field] for p in json.loads(text)["pairs"]], dtype=np.float64)


def test_numbers_are_the_bits_float_gives():
    """Random float64 bit patterns, long and short decimal strings, subnormals, integers: every
    value read equals ``json.loads`` (``float()`` of the text) to the last bit, as before."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**64 - 1, 4000, dtype=np.uint64, endpoint=True).view(np.float64)
    values = [repr(float(v)) for v in bits if np.isfinite(v) and abs(v) <= 1e6]
    values += [repr(float(v)) for v in rng.normal(0, 1e-300, 200)]  # subnormals and tiny normals
    digits = rng.integers(0, 10, (600, 30))
    values += [f"{'-' if k % 2 else ''}0.{''.join(map(str, row[: 1 + k % 30]))}e{k % 7 - 3}"
               for k, row in enumerate(digits)]
    values += ["999999", "-1000000", "2.2250738585072011e-308", "4.9406564584124654e-324",
               "1E5", "-0.0", "0", "123456.78901234567890123456789", "-0"]
    values = values[: len(values) // 8 * 8]
    n = len(values) // 8
    rows = [f"[{', '.join(values[8 * k + 2 * j: 8 * k + 2 * j + 2])}]" for k in range(n) for j in range(4)]
    flows = [f"[[{rows[4 * k]}, {rows[4 * k + 1]}], [{rows[4 * k + 2]}, {rows[4 * k + 3]}]]" for k in range(n)]
    pairs = ", ".join(f'{{"photo": "p{k}", "sketch": "s", "sketch_to_photo": {f}, "photo_to_sketch": {f}}}'
                      for k, f in enumerate(flows))
    text = f'{{"psc6k_submission": 1, "kind": "flow", "pairs": [{pairs}]}}'.encode()
    got = load_submission(text).sketch_to_photo.ravel()
    want = np.array([float(json.loads(v)) for v in values])  # json.loads: "-0" is the integer 0
    assert [struct.pack("<d", g) for g in got] == [struct.pack("<d", w) for w in want]


@pytest.mark.parametrize("dumps", [{}, {"indent": 1}, {"indent": 4}, {"separators": (",", ":")}])
@pytest.mark.parametrize("kind", ["flow", "keypoints"])
def test_fast_and_exact_paths_agree_with_json_loads(kind, dumps):
    n = 7
    shape = (n, 3, 6, 2) if kind == "flow" else (n, 8, 2)
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 10, shape), rng.normal(0, 1e-5, shape)
    extra = {}
    if kind == "flow":
        extra = {"confidence": {"sketch_to_photo": rng.uniform(0, 1, shape[:3]),
                                "photo_to_sketch": rng.uniform(-5, 5, shape[:3])}}
    sub = Submission("m", kind, [f"p{i}" for i in range(n)], [f"s{i}" for i in range(n)], a, b, **extra)
    text = _text(sub.to_json_dict(), **dumps)
    got = load_submission(text)
    for field in ("sketch_to_photo", "photo_to_sketch"):
        np.testing.assert_array_equal(getattr(got, field), _reference(text, field))
    if kind == "flow":
        for d, conf in got.confidence.items():
            np.testing.assert_array_equal(conf, _reference(text, f"{d}_confidence"))


def test_the_fast_path_reads_every_pair_after_the_first(monkeypatch):
    calls = []
    exact = JsonReader._exact_numbers
    monkeypatch.setattr(JsonReader, "_exact_numbers", lambda self, *a: calls.append(a) or exact(self, *a))
    text = _text(Submission("m", "flow", [f"p{i}" for i in range(50)], ["s"] * 50, _flows(50), _flows(50, seed=1))
                 .to_json_dict())
    load_submission(text)
    assert len(calls) == 2  # the first pair's two flows fix the shape; the other 98 arrays go fast


@pytest.mark.parametrize("bad, match", [
    ("[[[1, 2], [3, 4]], [[5, 6], [7]]]", "rows of different lengths"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, [8]]]]", "nested too deep"),
    ("[[[1, 2], [3, 4]], [[5, 6], 7]]", "a nested mix"),
    ('[[[1, 2], [3, 4]], [[5, 6], [7, "8"]]]', "found strings"),
    ('[[[1, 2], [3, 4]], [[5, 6], [7, "]]]"]]]', "found strings"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, true]]]", "found booleans"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, null]]]", "found null"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, NaN]]]", "malformed JSON.*NaN"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, 1e400]]]", "too large for float64"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, 1 2]]]", "malformed JSON"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, -]]]", "malformed JSON"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[1, 2], [3, 4]]]", r"shape \[3, 2, 2\] differs from the first"),
    ("[[[1, 2], [3, 4]], [[5, 6], [7, {}]]]", "found an object"),
])
def test_a_later_pair_that_the_fast_path_refuses_gets_the_exact_message(bad, match):
    """The first pair fixes the shape; a later array that does not match is read by the exact path,
    whose message names the pair and the field."""
    good = identity_flow(1, 2)[0].tolist()
    pairs = [json.dumps(_pair(i, good, good)) for i in range(3)]
    pairs[2] = pairs[2].replace(json.dumps(good), bad, 1)
    text = f'{{"psc6k_submission": 1, "kind": "flow", "pairs": [{", ".join(pairs)}]}}'.encode()
    with pytest.raises(SubmissionError, match=match) as err:
        load_submission(text)
    assert "2.jpg" in str(err.value) and "sketch_to_photo" in str(err.value), str(err.value)


def test_strings_with_quotes_brackets_and_escapes_round_trip():
    names = ['a\\"}]]]{b', "c\u00e9\U0001f600", "tab\there", "x" * 1000]
    flows = _flows(len(names), 2, 2)
    sub = Submission("m\"[", "flow", names, [n + "-s" for n in names], flows, flows)
    got = load_submission(_text(sub.to_json_dict()))
    assert got.photo == names and got.method == "m\"[" and got.sketch == [n + "-s" for n in names]
    got = load_submission(_text(sub.to_json_dict(), ensure_ascii=False))
    assert got.photo == names


def test_a_surrogate_pair_across_a_chunk_boundary_is_read_and_a_lone_one_refused():
    flows = _flows(1, 2, 2)
    for method, ok in (("\U0001f600", True), ("\ud83d", False), ("x\ude00", False)):
        text = _text(_doc([_pair(0, flows[0].tolist(), flows[0].tolist())]))
        escape = json.dumps(method).encode()[1:-1]  # \ud83d\ude00, \ud83d or x\ude00
        text = text.replace(b'"method": "m"', b'"method": "' + escape + b'"')
        at = text.index(escape)
        for shift in range(-len(escape), 2):  # the escapes straddle the first chunk's end
            padded = text[:1] + b" " * (CHUNK_BYTES - at + shift) + text[1:]
            if ok:
                assert load_submission(padded).method == method
            else:
                with pytest.raises(SubmissionError, match="lone UTF-16 surrogate"):
                    load_submission(padded)


def test_tokens_and_arrays_are_bounded(tmp_path):
    flows = _flows(1, 2, 2)
    base = _doc([_pair(0, flows[0].tolist(), flows[0].tolist())])
    with pytest.raises(SubmissionTooLarge, match="string of more than"):
        load_submission(_text({**base, "method": "a" * (json_reader.MAX_TOKEN_BYTES + 10)}))
    text = _text(base).replace(b'"psc6k_submission": 1', b'"psc6k_submission": 1' + b"0" * (2 << 20))
    with pytest.raises(SubmissionTooLarge, match="number of more than"):
        load_submission(text)
    # one array's text: at most BYTES_PER_VALUE a value of the largest array the limits allow
    limits = ReadLimits(max_side=4)
    cap = 64 * 1024 + BYTES_PER_VALUE * 4 * 4 * 2
    padded = "[[[1, 2]," + " " * cap + "[3, 4]], [[5, 6], [7, 8]]]"
    text = _text(base).replace(json.dumps(flows[0].tolist()).encode(), padded.encode(), 1)
    with pytest.raises(SubmissionTooLarge, match="JSON text of one array is over"):
        load_submission(text, limits=limits)
    text = text.replace(b" " * cap, b" " * (cap - 100))
    assert load_submission(text, limits=limits).sketch_to_photo.shape == (1, 2, 2, 2)


def test_array_counts_are_bounded_before_decoding(monkeypatch):
    flows = _flows(1, 2, 2)
    base = _text(_doc([_pair(0, flows[0].tolist(), flows[0].tolist())]))
    bomb = "[" + ", ".join(["[[1, 2]]"] * 30) + "]"  # 30 rows: 61 arrays > 1 + 4 + 16
    with pytest.raises(SubmissionTooLarge, match="more than 21 arrays"):
        load_submission(base.replace(json.dumps(flows[0].tolist()).encode(), bomb.encode(), 1),
                        limits=ReadLimits(max_side=4))
    row = "[[" + ", ".join(["0"] * 40) + "]]"  # 40 values in one row: more than 4 x 4 x 2
    with pytest.raises(SubmissionTooLarge, match="more than 32 values"):
        load_submission(base.replace(json.dumps(flows[0].tolist()).encode(), row.encode(), 1),
                        limits=ReadLimits(max_side=4))
    # beyond values + arrays commas, refused before the generic decode would build the lists
    monkeypatch.setattr(json_reader, "_decode_any", lambda text: pytest.fail(f"decoded {len(text)} bytes"))
    row = "[[" + ", ".join(["0"] * 60) + "]]"
    with pytest.raises(SubmissionTooLarge, match="more than 32 values"):
        load_submission(base.replace(json.dumps(flows[0].tolist()).encode(), row.encode(), 1),
                        limits=ReadLimits(max_side=4))


@pytest.mark.parametrize("text, match", [
    (b'{"psc6k_submission": 1, "kind": "flow", "pairs": [', "ends early"),
    (b'{"psc6k_submission": 1 "kind": "flow"}', "malformed JSON at byte 23: expected ','"),
    (b'{"psc6k_submission": 1, "kind": "flow", "pairs": [{}, ]}', r"pairs\[0\].photo must be"),
    (b'{"psc6k_submission": 1, "kind": "flow", "pairs": [1]}', r"pairs\[0\] is not an object \(found a number"),
    (b'{"psc6k_submission": 1, "kind": "flow",}', "malformed JSON"),
    (b'{"psc6k_submission": 1, "method": "a\x01b"}', "malformed JSON"),
    (b'{"psc6k_submission": 1, "method": "a\\qb"}', "malformed JSON"),
    (b'{"psc6k_submission": 1, "method": "\xff"}', "malformed JSON"),
    (b'{"psc6k_submission": 1}  x', "unexpected content after the JSON object"),
    (b'{"psc6k_submission": 1, "psc6k_submission": 1}', "appears twice"),
    (b'{"psc6k_submission": Infinity}', "NaN, Infinity"),
    (b"   ", "empty submission"),
])
def test_skeleton_errors(text, match):
    with pytest.raises(SubmissionError, match=match):
        load_submission(text)


def test_structure_and_nested_shape():
    assert structure((2, 3)) == b"[[,,],[,,]]"
    assert structure((8, 2)) == b"[" + b",".join([b"[,]"] * 8) + b"]"
    assert nested_shape([[1, 2.5], [3, 4]]) == (2, 2)
    assert nested_shape([]) == (0,)
    for value, message in [([[1], [2, 3]], "different lengths"), ([[1], 2], "nested mix"), ([True], "booleans"),
                           ([None], "null"), (["x"], "strings"), ([{}], "an object")]:
        with pytest.raises(ValueError, match=message):
            nested_shape(value)


def test_reads_from_a_stream_in_chunks():
    """A stream that returns a few bytes at a time gives the same submission as the whole text."""
    class Trickle(io.BytesIO):
        def read(self, n=-1):
            return super().read(min(n, 7) if n and n > 0 else 7)

    sub = Submission("m", "flow", [f"p{i}" for i in range(5)], ["s"] * 5, _flows(5), _flows(5, seed=2))
    text = _text(sub.to_json_dict(), indent=2)
    a = load_submission(Trickle(text))
    np.testing.assert_array_equal(a.photo_to_sketch, _reference(text, "photo_to_sketch"))
