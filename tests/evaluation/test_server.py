"""Scoring server: POST /score equals `psc6k eval --json`, and every bad input is a 4xx.

The reference for every score is the `psc6k eval --json` command itself, run in-process on the
same file; the server must not have a scoring path of its own.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from evaluation.server.app import create_app
from evaluation.server.settings import ServerSettings
from evaluation.server.testdata import free_port, wait_until_healthy
from psc6k.testing import make_annotations, make_flow_submission, make_keypoint_submission
from psc6k.cli import main as psc6k_main
from psc6k.formats import write_test_pairs_ps
from psc6k.submission import Submission, save_submission

JSON = {"content-type": "application/json"}
NPZ = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Annotations (3 categories x 2 photos x 2 sketches = 12 pairs) and submissions on disk."""
    root = tmp_path_factory.mktemp("server")
    ann = make_annotations()
    csv = root / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    flow = make_flow_submission(ann)
    kps = make_keypoint_submission(ann)
    out = {"root": root, "ann": ann, "csv": csv, "flow": flow, "kps": kps}
    out["flow.json"] = save_submission(flow, root / "flow.json")
    out["flow.json.gz"] = save_submission(flow, root / "flow.json.gz")
    out["flow.npz"] = save_submission(flow, root / "flow.npz")
    out["kps.npz"] = save_submission(kps, root / "kps.npz", compress=True)
    return out


def _client(files, tmp_path, **overrides) -> TestClient:
    settings = ServerSettings(annotations=str(files["csv"]), db_url=f"sqlite:///{tmp_path / 'lb.sqlite'}",
                              admin_token="admin-secret", **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(files, tmp_path):
    with _client(files, tmp_path) as c:
        yield c


def eval_json(path, csv, capsys) -> dict:
    """The reference: `psc6k eval --json` on the same file."""
    capsys.readouterr()
    assert psc6k_main(["eval", str(path), "--annotations", str(csv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _without_id(reply: dict) -> dict:
    reply = dict(reply)
    assert len(reply.pop("submission_id")) == 32
    return reply


# --------------------------------------------------------------------------- equality with psc6k eval
@pytest.mark.parametrize("name, how", [
    ("flow.json", "json"), ("flow.json", "json+gzip-encoding"), ("flow.json.gz", "json"),
    ("flow.npz", "npz"), ("kps.npz", "npz"),
    ("flow.npz", "multipart"), ("flow.json", "multipart"), ("flow.json.gz", "multipart"),
])
def test_score_equals_psc6k_eval_json(files, client, capsys, name, how):
    path = files[name]
    data = path.read_bytes()
    if how == "json":
        r = client.post("/score", content=data, headers=JSON)
    elif how == "json+gzip-encoding":
        r = client.post("/score", content=gzip.compress(data), headers={**JSON, "content-encoding": "gzip"})
    elif how == "npz":
        r = client.post("/score", content=data, headers=NPZ)
    else:
        r = client.post("/score", files={"file": (path.name, data)})
    assert r.status_code == 200, r.text
    reply = r.json()
    expected = eval_json(path, files["csv"], capsys)
    assert _without_id(reply) == expected
    assert reply["scorer_version"] == expected["scorer_version"]
    assert set(expected["per_category"]) == {"airplane", "alarm_clock", "ant"}


def test_score_matches_a_hand_computed_case(files, client):
    """Independent check of one number: keypoints exactly on target except a known set of misses."""
    ann = files["ann"]
    s2p, p2s = ann.photo_kps.copy(), ann.sketch_kps.copy()
    s2p[0, :4] += [12.5, 0.0]      # just inside the 0.05 threshold (12.8 px)
    s2p[1, :] += [30.0, 0.0]       # 8 keypoints beyond 0.10
    p2s[2, :2] += [0.0, 20.0]      # 2 keypoints beyond 0.05, within 0.10
    sub = Submission("hand", "keypoints", ann.photo, ann.sketch, s2p, p2s)
    buf = io.BytesIO()
    np.savez(buf, photo=np.array(sub.photo), sketch=np.array(sub.sketch), sketch_to_photo=s2p, photo_to_sketch=p2s)
    r = client.post("/score", content=buf.getvalue(), headers=NPZ)
    assert r.status_code == 200, r.text
    total = len(ann) * 2 * 8
    assert r.json()["overall"]["pck@0.05"] == pytest.approx(100 * (total - 8 - 2) / total)
    assert r.json()["overall"]["pck@0.10"] == pytest.approx(100 * (total - 8) / total)
    assert r.json()["method"] == "unnamed"


# --------------------------------------------------------------------------- bad input
def _json_sub(ann, kind="keypoints", **override) -> dict:
    obj = {"psc6k_submission": 1, "method": "t", "kind": kind, "pairs": [
        {"photo": p, "sketch": s, "sketch_to_photo": a.tolist(), "photo_to_sketch": b.tolist()}
        for p, s, a, b in zip(ann.photo, ann.sketch, ann.photo_kps, ann.sketch_kps)]}
    obj.update(override)
    return obj


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _zip_bomb(member_bytes: int) -> bytes:
    """An NPZ whose one member is a valid .npy of zeros, ~1000x smaller compressed."""
    buf = io.BytesIO()
    header = io.BytesIO()
    n = member_bytes // 8
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("sketch_to_photo.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            block = bytes(1 << 20)
            left = n * 8
            while left > 0:
                member.write(block[:min(left, len(block))])
                left -= len(block)
    return buf.getvalue()


def _bad_cases(files):
    ann = files["ann"]
    good = _json_sub(ann)
    dumps = lambda o: json.dumps(o).encode()  # noqa: E731
    nan_sub = _json_sub(ann)
    nan_sub["pairs"][3]["sketch_to_photo"][2][0] = float("nan")
    inf_sub = _json_sub(ann)
    inf_sub["pairs"][0]["photo_to_sketch"][0][1] = float("inf")
    short = _json_sub(ann)
    short["pairs"][1]["sketch_to_photo"] = short["pairs"][1]["sketch_to_photo"][:7]
    flow3 = _json_sub(ann, kind="flow")
    for pair in flow3["pairs"]:
        pair["sketch_to_photo"] = pair["photo_to_sketch"] = np.zeros((4, 4, 3)).tolist()
    zero = _json_sub(ann, kind="flow")
    for pair in zero["pairs"]:
        pair["sketch_to_photo"] = pair["photo_to_sketch"] = []
    missing = _json_sub(ann)
    del missing["pairs"][5]
    extra = _json_sub(ann)
    extra["pairs"].append({**extra["pairs"][0], "photo": extra["pairs"][0]["photo"].replace("airplane", "zebra"),
                           "sketch": "rendered_256x256/256x256/sketch/tx_000100000000/zebra/nope-1.png"})
    duplicate = _json_sub(ann)
    duplicate["pairs"].append(dict(duplicate["pairs"][0]))
    unknown_path = _json_sub(ann)
    unknown_path["pairs"][0]["photo"] = "photos/airplane/elsewhere.jpg"
    text = dumps(good).decode()
    first_number = repr(float(ann.photo_kps[0, 0, 0]))
    assert first_number in text
    flow_npz = files["flow.npz"].read_bytes()
    flow = files["flow"]
    base = dict(photo=np.array(flow.photo), sketch=np.array(flow.sketch))
    lying = _npz(**base, sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch)
    # Rewrite one member's .npy header to claim a 10^12-element array in the same bytes.
    lying_buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(lying)) as zin, zipfile.ZipFile(lying_buf, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "sketch_to_photo.npy":
                hdr = io.BytesIO()
                np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False,
                                                           "shape": (10**12,)})
                data = b"\x93NUMPY\x01\x00"[:0] + hdr.getvalue() + data[128:]
            zout.writestr(info.filename, data)
    return [
        # (name, body, headers, expected status, words expected in the detail)
        ("malformed JSON", b'{"psc6k_submission": 1, "kind": ', JSON, 422, ["malformed JSON"]),
        ("not JSON at all", b"\xff\xfe\x00garbage", JSON, 422, ["JSON"]),
        ("truncated gzip (encoding)", gzip.compress(dumps(good))[:-40], {**JSON, "content-encoding": "gzip"}, 422,
         ["truncated"]),
        ("truncated gzip (body)", gzip.compress(dumps(good))[:100], JSON, 422, ["truncated"]),
        ("corrupt gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"notdeflate!!", JSON, 422, ["corrupt"]),
        ("wrong schema version", dumps({**good, "psc6k_submission": 2}), JSON, 422, ["version"]),
        ("no schema version", dumps({k: v for k, v in good.items() if k != "psc6k_submission"}), JSON, 422,
         ["psc6k_submission"]),
        ("NaN", dumps(nan_sub), JSON, 422, ["NaN", ann.sketch[3]]),
        ("Inf", dumps(inf_sub), JSON, 422, ["Inf", "photo_to_sketch"]),
        ("wrong keypoint shape", dumps(short), JSON, 422, ["shape", "sketch_to_photo", ann.sketch[1]]),
        ("wrong flow shape", dumps(flow3), JSON, 422, ["shape"]),
        ("zero-size flows", dumps(zero), JSON, 422, ["shape"]),
        ("zero pairs", dumps({**good, "pairs": []}), JSON, 422, ["no pairs"]),
        ("zero-size NPZ", _npz(photo=np.array([], dtype=str), sketch=np.array([], dtype=str),
                               sketch_to_photo=np.zeros((0, 16, 16, 2)), photo_to_sketch=np.zeros((0, 16, 16, 2))),
         NPZ, 422, ["no pairs"]),
        ("missing pair", dumps(missing), JSON, 422, ["missing", "1 of 12"]),
        ("extra pair", dumps(extra), JSON, 422, ["not in the annotations", "zebra"]),
        ("duplicate pair", dumps(duplicate), JSON, 422, ["duplicate", ann.sketch[0]]),
        ("unknown path", dumps(unknown_path), JSON, 422, ["elsewhere.jpg"]),
        ("huge number", text.replace(first_number, "1e300", 1).encode(), JSON, 422, ["beyond"]),
        ("overflowing number", text.replace(first_number, "1e999", 1).encode(), JSON, 422, ["too large"]),
        ("400-digit integer", text.replace(first_number, "1" + "0" * 400, 1).encode(), JSON, 422, []),
        ("5000-digit integer", text.replace(first_number, "1" + "0" * 5000, 1).encode(), JSON, 422, []),
        ("deeply nested JSON", b"[" * 100_000, JSON, 422, ["object"]),
        ("deeply nested flow", dumps(good).replace(b'"sketch_to_photo": [', b'"sketch_to_photo": ' + b"[" * 100_000, 1),
         JSON, 422, ["nested too deep"]),
        ("top-level array", b"[1, 2, 3]", JSON, 422, ["object"]),
        ("wrong content type", dumps(good), {"content-type": "text/plain"}, 415, ["Content-Type"]),
        ("no content type", dumps(good), {"content-type": ""}, 415, ["Content-Type"]),
        ("NPZ sent as JSON", flow_npz, JSON, 415, ["NPZ"]),
        ("JSON sent as NPZ", dumps(good), NPZ, 415, ["not an NPZ", "application/json"]),
        ("unknown content encoding", dumps(good), {**JSON, "content-encoding": "br"}, 415, ["Content-Encoding"]),
        ("empty body", b"", JSON, 422, ["empty"]),
        ("NPZ with object arrays (pickle)",
         _npz(photo=np.array(flow.photo, dtype=object), sketch=np.array(flow.sketch),
              sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch), NPZ, 422, ["pickle"]),
        ("NPZ with a lying .npy header", lying_buf.getvalue(), NPZ, 422, ["header says shape"]),
        ("corrupt zip", flow_npz[:2000], NPZ, 422, ["NPZ"]),
        ("NPZ lacking arrays", _npz(photo=np.array(flow.photo)), NPZ, 422, ["lacks arrays"]),
        ("NPZ with a non-.npy member", _zip_with({"evil.txt": b"hello"}), NPZ, 422, ["not a .npy"]),
        ("zip bomb", _zip_bomb(64 * 2**20), NPZ, 413, ["decompress"]),
        ("gzip bomb of zeros", gzip.compress(bytes(64 * 2**20)), {**JSON, "content-encoding": "gzip"}, 422,
         ["not JSON"]),
        ("gzip bomb of duplicate pairs", gzip.compress(b'{"psc6k_submission": 1, "kind": "keypoints", "pairs": ['
                                                       + _KP_PAIR * 90_000), {**JSON, "content-encoding": "gzip"}, 422,
         ["duplicate pair (entries 0 and 1)"]),
        ("gzip bomb of pairs", gzip.compress(b'{"psc6k_submission": 1, "kind": "keypoints", "pairs": ['
                                             + b"".join(_KP_PAIR.replace(b'"p"', b'"p%d"' % i) for i in range(90_000))),
         {**JSON, "content-encoding": "gzip"}, 413, ["more than 13 pairs"]),
        ("gzip string bomb", gzip.compress(b'{"method": "' + b"a[" * (32 * 2**20)), {**JSON, "content-encoding": "gzip"},
         413, ["string of more than"]),
    ]


_KP_PAIR = (b'{"photo": "p", "sketch": "s", "sketch_to_photo": [' + b"[1, 2], " * 7 + b'[1, 2]], "photo_to_sketch": ['
            + b"[1, 2], " * 7 + b"[1, 2]]},")


def _zip_with(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_every_bad_input_is_a_4xx_naming_the_problem(files, tmp_path):
    """One server takes all of them in a row and still scores a good submission afterwards."""
    with _client(files, tmp_path, max_decompressed_bytes=16 * 2**20) as client:
        failures = []
        for name, body, headers, status, words in _bad_cases(files):
            r = client.post("/score", content=body, headers=headers)
            detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") \
                else r.text
            if r.status_code != status or not isinstance(detail, str) or not all(w in detail for w in words):
                failures.append(f"{name}: {r.status_code} {detail!r} (expected {status} with {words})")
        assert not failures, "\n".join(failures)
        r = client.post("/score", content=files["flow.npz"].read_bytes(), headers=NPZ)
        assert r.status_code == 200


def test_bad_multipart_bodies(files, client):
    r = client.post("/score", files={"other": ("x.npz", files["flow.npz"].read_bytes())})
    assert r.status_code == 400 and "no field 'file'" in r.json()["detail"]
    r = client.post("/score", data={"file": "not a file"})
    assert r.status_code in (400, 415)
    r = client.post("/score", content=b"--xx\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 400
    r = client.post("/score", files={"file": ("x.json", b"")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/score", files={"file": ("x.json.gz", gzip.compress(b"{")[:-5])})
    assert r.status_code == 422 and "truncated" in r.json()["detail"]


def test_body_size_limit_on_the_wire(files, tmp_path):
    data = files["flow.json"].read_bytes()
    with _client(files, tmp_path, max_body_bytes=len(data) - 1) as client:
        r = client.post("/score", content=data, headers=JSON)
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]
        r = client.post("/score", content=chunks(), headers=JSON)
        assert r.status_code == 413
        r = client.post("/score", content=gzip.compress(data), headers={**JSON, "content-encoding": "gzip"})
        assert r.status_code == 200, r.text  # compressed, it fits
        r = client.post("/admin/tokens", content=b"x" * 100_000,
                        headers={**JSON, "authorization": "Bearer admin-secret"})
        assert r.status_code == 413


def test_decompressed_size_limit(files, tmp_path):
    data = files["flow.json"].read_bytes()
    with _client(files, tmp_path, max_decompressed_bytes=len(data) - 1) as client:
        r = client.post("/score", content=gzip.compress(data), headers={**JSON, "content-encoding": "gzip"})
        assert r.status_code == 413 and "decompress" in r.json()["detail"]
        r = client.post("/score", content=files["flow.npz"].read_bytes(), headers=NPZ)
        assert r.status_code == 200  # the NPZ members are smaller than the JSON text


def test_gzip_multi_member_padding_and_trailing_garbage(files):
    """gzip decoding is the reader's (psc6k.submission), the same for the CLI and the server."""
    from psc6k.errors import SubmissionError
    from psc6k.submission import load_submission

    text = files["flow.json"].read_bytes()
    half = len(text) // 2
    two = gzip.compress(text[:half]) + gzip.compress(text[half:])
    assert load_submission(two).photo == files["flow"].photo
    assert load_submission(gzip.compress(text) + b"\x00" * 8).photo == files["flow"].photo
    with pytest.raises(SubmissionError, match="corrupt"):
        load_submission(gzip.compress(text) + b"junk")
    with pytest.raises(SubmissionError, match="decompresses to more than"):
        load_submission(gzip.compress(text), max_decompressed=len(text) - 1)


def test_busy_scorer_answers_503(files, tmp_path):
    with _client(files, tmp_path, max_concurrent_scoring=1, max_pending_scoring=0) as client:
        slots = client.app.state.psc6k.slots
        slots.admit()  # one scoring "in progress"
        try:
            r = client.post("/score", content=files["flow.npz"].read_bytes(), headers=NPZ)
            assert r.status_code == 503 and r.headers["retry-after"]
        finally:
            slots.release()
        assert client.post("/score", content=files["flow.npz"].read_bytes(), headers=NPZ).status_code == 200


def test_health_and_openapi(client, files):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["n_pairs"] == len(files["ann"])
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/score"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/octet-stream", "multipart/form-data"}


# --------------------------------------------------------------------------- a real server process
def test_psc6k_serve_survives_bad_submissions(files, tmp_path, capsys):
    """`psc6k serve` under uvicorn: bad inputs, then the same answer as `psc6k eval --json`."""
    port = free_port()
    env = {**os.environ, "PSC6K_ADMIN_TOKEN": "adm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "psc6k", "serve", "--annotations", str(files["csv"]), "--port", str(port),
         "--db", f"sqlite:///{tmp_path / 'lb.sqlite'}", "--log-level", "warning", "--max-decompressed-mb", "16",
         "--upload-timeout", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, proc, 60)
        with httpx.Client(base_url=base, timeout=60) as http:
            for name, body, headers, status, _ in _bad_cases(files):
                if name in ("no content type",):
                    continue
                r = http.post("/score", content=body, headers=headers)
                assert r.status_code == status, (name, r.status_code, r.text)
            # A stalled upload is cut off (408) instead of holding its scoring slot.
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{\"psc6k")
                assert sock.recv(4096).startswith(b"HTTP/1.1 408")
            r = http.post("/score", content=files["flow.json.gz"].read_bytes(), headers=JSON)
            assert r.status_code == 200
            assert _without_id(r.json()) == eval_json(files["flow.json.gz"], files["csv"], capsys)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_models_without_the_model_zoo_registry(files, tmp_path, monkeypatch):
    from evaluation.server.routers import meta

    monkeypatch.setattr(meta, "load_registry", lambda: None)
    with _client(files, tmp_path) as client:
        body = client.get("/models").json()
    assert body["models"] == [] and "not installed" in body["note"]


def test_serve_cli_refuses_bad_configuration(files, tmp_path, capsys):
    assert psc6k_main(["serve", "--annotations", str(tmp_path / "nope.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert psc6k_main(["serve", "--annotations", str(files["csv"]), "--db", "nonsense://x"]) == 2
    assert "cannot open the leaderboard database" in capsys.readouterr().err
    assert psc6k_main(["serve", "--annotations", str(files["csv"]), "--max-body-mb", "0"]) == 2
    assert "--max-body-mb" in capsys.readouterr().err
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("photo,sketch\nx,y\n")
    assert psc6k_main(["serve", "--annotations", str(bad_csv), "--db", f"sqlite:///{tmp_path / 'x.sqlite'}"]) == 2
    assert "bad.csv" in capsys.readouterr().err


def test_database_outage_is_a_503_not_a_500(files, tmp_path):
    from sqlalchemy import text

    with _client(files, tmp_path) as client:
        engine = client.app.state.psc6k.engine
        with engine.begin() as conn:  # the tables vanish under the running server
            conn.execute(text("DROP TABLE psc6k_scorings"))
        r = client.post("/score", content=files["flow.npz"].read_bytes(), headers=NPZ)
        assert r.status_code == 503 and "database" in r.json()["detail"]
        assert client.get("/health").status_code == 200
