"""Submission files (psc6k/submission/files.py): containers, what is refused, the CLI on top."""

import gzip
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from psc6k.errors import SubmissionError
from psc6k.formats import write_test_pairs_ps
from psc6k.pck import evaluate
from psc6k.submission import Submission, identity_flow, load_submission, save_submission


@pytest.mark.parametrize("name", ["s.json", "s.json.gz", "s.npz"])
def test_containers_give_identical_scores(tmp_path, ann, flow_sub, name):
    ref = evaluate(ann, flow_sub, seed=3).to_dict()
    path = save_submission(flow_sub, tmp_path / name)
    got = evaluate(ann, load_submission(path), seed=3).to_dict()
    assert got == ref


def test_keypoint_submission_json_and_npz(tmp_path, ann):
    sub = Submission("kp", "keypoints", ann.photo, ann.sketch, ann.photo_kps + 1, ann.sketch_kps - 1)
    a = evaluate(ann, load_submission(save_submission(sub, tmp_path / "k.json")), n_bootstrap=0)
    b = evaluate(ann, load_submission(save_submission(sub, tmp_path / "k.npz")), n_bootstrap=0)
    assert a.overall == b.overall == {"pck@0.05": 100.0, "pck@0.10": 100.0}


def _json(ann, **over):
    obj = {"psc6k_submission": 1, "method": "m", "kind": "keypoints",
           "pairs": [{"photo": p, "sketch": s, "sketch_to_photo": [[1, 2]] * 8, "photo_to_sketch": [[1, 2]] * 8}
                     for p, s in zip(ann.photo, ann.sketch)]}
    obj.update(over)
    return obj


@pytest.mark.parametrize("mutate, match", [
    (lambda o: o.pop("psc6k_submission"), "missing \"psc6k_submission\""),
    (lambda o: o.update(psc6k_submission=2), "unsupported format version 2"),
    (lambda o: o.update(kind="dense"), "field 'kind'"),
    (lambda o: o.update(pairs=[]), "no pairs"),
    (lambda o: o["pairs"][3].pop("photo_to_sketch"), "pair .*field 'photo_to_sketch': missing"),
    (lambda o: o["pairs"][2].update(sketch_to_photo=[[1, 2]] * 7), r"expected shape \[8, 2\], got \[7, 2\]"),
    (lambda o: o["pairs"][2].update(sketch_to_photo=[[1, 2]] * 7 + [[1]]), "not a rectangular array"),
    (lambda o: o["pairs"][5].update(sketch_to_photo=[[1, "x"]] * 8), "not a rectangular array|rectangular"),
    (lambda o: o["pairs"][1].update(photo=7), r"pairs\[1\].photo must be a non-empty string"),
    (lambda o: o["pairs"].append(dict(o["pairs"][0])), "duplicate pair"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=[[1e300, 2]] * 8), "beyond"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=[["1", 2]] * 8), "found strings"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=[[True, 2]] * 8), "found booleans"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=[[None, 2]] * 8), "null"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=[[10 ** 400, 2]] * 8), "too large"),
    (lambda o: o["pairs"][4].update(sketch_to_photo=5), "rectangular"),
])
def test_json_errors_name_the_pair_and_field(ann, mutate, match):
    obj = _json(ann)
    mutate(obj)
    with pytest.raises(SubmissionError, match=match):
        load_submission(json.dumps(obj).encode())


def test_nan_inf_are_rejected_with_pair_named(ann):
    text = json.dumps(_json(ann)).replace("[1, 2]", "[NaN, 2]", 20).encode()
    with pytest.raises(SubmissionError, match=r"pair \(photo=.*malformed JSON.*NaN"):
        load_submission(text)


def test_bytes_that_are_not_a_submission():
    for data, match in [(b"{\"psc6k", "malformed JSON"), (b"", "empty"), (b"\xff\xfe\x00", "not JSON|malformed"),
                        (gzip.compress(b"{}")[:-6], "gzip data is (truncated|corrupt)"), (b"PK\x03\x04garbage", "NPZ"),
                        (b"[1, 2]", "top level"), (b'{"psc6k_submission": ' + b"9" * 5000 + b"}", "too large")]:
        with pytest.raises(SubmissionError, match=match):
            load_submission(data)


def test_npz_with_object_array_is_refused(tmp_path, ann):
    buf = io.BytesIO()
    np.savez(buf, photo=np.array(ann.photo, dtype=object), sketch=np.array(ann.sketch),
             sketch_to_photo=ann.photo_kps, photo_to_sketch=ann.sketch_kps)
    with pytest.raises(SubmissionError, match="pickle"):
        load_submission(buf.getvalue())


def test_zip_bomb_is_refused_before_decompressing():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sketch_to_photo.npy", b"\0" * (50 * 1024 * 1024))
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(SubmissionError, match="over the limit"):
        load_submission(buf.getvalue(), max_decompressed=10 * 1024 * 1024)
    arr = b"[" + b"[1, 2], " * 7 + b"[1, 2]]"
    pairs = b"".join(b'{"photo": "p%d", "sketch": "s", "sketch_to_photo": %s, "photo_to_sketch": %s},' % (i, arr, arr)
                     for i in range(60_000))
    with pytest.raises(SubmissionError, match="decompresses to more than|take more than"):
        load_submission(gzip.compress(b'{"psc6k_submission": 1, "kind": "keypoints", "pairs": [' + pairs),
                        max_decompressed=10 * 1024 * 1024)


def test_flows_must_share_one_size(ann):
    obj = _json(ann, kind="flow")
    for p in obj["pairs"]:
        p["sketch_to_photo"] = p["photo_to_sketch"] = identity_flow(1, 4)[0].tolist()
    obj["pairs"][6]["photo_to_sketch"] = identity_flow(1, 5)[0].tolist()
    with pytest.raises(SubmissionError, match="differs from the first pair's"):
        load_submission(json.dumps(obj).encode())
    obj["pairs"][6]["photo_to_sketch"] = [[[0, 0]]]
    with pytest.raises(SubmissionError, match="H, W >= 2"):
        load_submission(json.dumps(obj).encode())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "psc6k", *map(str, args)], capture_output=True, text=True)


def test_eval_cli_json_and_errors(tmp_path, ann, flow_sub):
    csv = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    sub = save_submission(flow_sub, tmp_path / "s.npz")
    r = _cli("eval", sub, "--annotations", csv, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["overall"]) == {"pck@0.05", "pck@0.10"}
    assert out["overall"] == evaluate(ann, flow_sub).overall
    assert set(out["per_direction"]) == {"sketch_to_photo", "photo_to_sketch"}
    assert set(out["per_category"]) == set(ann.category)
    r = _cli("eval", sub, "--annotations", csv)
    assert r.returncode == 0 and "PCK@0.05" in r.stdout and "sketch_to_photo" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"psc6k_submission": 1, "kind": "flow", "pairs": [}')
    r = _cli("eval", bad, "--annotations", csv)
    assert r.returncode == 2 and "malformed JSON" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval", tmp_path / "nope.npz", "--annotations", csv)
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval", sub, "--annotations", tmp_path / "missing.csv")
    assert r.returncode == 2 and "missing.csv" in r.stderr and "Traceback" not in r.stderr


def test_import_psc6k_stays_light():
    code = ("import sys, psc6k, psc6k.formats, psc6k.pck, psc6k.submission, psc6k.cli, psc6k.commands.eval;"
            "bad = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'uvicorn', 'pandas') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("indent", [None, 1])
@pytest.mark.parametrize("kind", ["flow", "keypoints"])
def test_streaming_json_equals_json_loads(ann, indent, kind):
    """The streaming reader gives exactly the float64 arrays that ``json.loads`` gives."""
    rng = np.random.default_rng(2)
    shape = (len(ann), 5, 7, 2) if kind == "flow" else (len(ann), 8, 2)
    a, b = rng.normal(0, 1, shape), rng.normal(0, 1e-7, shape)
    sub = Submission("m", kind, ann.photo, ann.sketch, a, b)
    text = json.dumps(sub.to_json_dict(), indent=indent).encode()
    got = load_submission(text)
    ref = json.loads(text)
    for d in ("sketch_to_photo", "photo_to_sketch"):
        np.testing.assert_array_equal(getattr(got, d), np.array([p[d] for p in ref["pairs"]], dtype=np.float64))
        np.testing.assert_array_equal(getattr(got, d), getattr(sub, d))
    assert got.photo == sub.photo and got.kind == kind and got.confidence is None


def test_cocoeval_shaped_api(tmp_path, ann, flow_sub, capsys):
    from psc6k import PSC6KEval

    csv = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    ev = PSC6KEval(csv, save_submission(flow_sub, tmp_path / "s.npz"))
    res = ev.evaluate()
    assert ev.stats == res.overall == evaluate(ann, flow_sub).overall
    text = ev.summarize()
    assert "PCK@0.10" in capsys.readouterr().out and "photo_to_sketch" in text
    assert all(cat in text for cat in set(ann.category))
