"""One corpus of good and hostile submission files, fed to both ``psc6k eval`` and ``POST /score``:
they must accept and refuse exactly the same files, with the same message (after the file name).

Both go through :func:`psc6k.submission.load_submission`; this test is what keeps it that way.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from evaluation.server.app import create_app
from evaluation.server.settings import ServerSettings
from psc6k.testing import make_annotations, make_flow_submission, make_keypoint_submission
from psc6k.cli import main as psc6k_main
from psc6k.formats import write_test_pairs_ps
from psc6k.submission import Submission

LIMIT_MB = 16


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _deflated_npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _encrypted_flag(data: bytes) -> bytes:
    """Set the 'encrypted' bit of every member (local and central headers)."""
    out = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            out[pos + off] |= 1
            pos = out.find(sig, pos + 4)
    return bytes(out)


def corpus(ann):
    flow, kps = make_flow_submission(ann), make_keypoint_submission(ann)
    n = len(ann)
    names = dict(photo=np.array(flow.photo), sketch=np.array(flow.sketch))
    good_json = flow.to_json_dict()
    dumps = lambda o: json.dumps(o).encode()  # noqa: E731
    conf = {d: np.random.default_rng(3).uniform(0, 1, (n, 16, 16)) for d in ("sketch_to_photo", "photo_to_sketch")}
    with_conf = Submission(flow.method, "flow", flow.photo, flow.sketch, flow.sketch_to_photo, flow.photo_to_sketch,
                           conf)

    def mutate(fn):
        obj = json.loads(json.dumps(good_json))
        fn(obj)
        return dumps(obj)

    int64_min = np.full((n, 8, 2), np.iinfo(np.int64).min, dtype=np.int64)
    kp_ok = kps.sketch_to_photo.astype(np.float32)
    lying_buf = io.BytesIO()  # sketch_to_photo.npy's header claims 10x the rows its bytes hold
    with zipfile.ZipFile(io.BytesIO(_npz(**names, sketch_to_photo=flow.sketch_to_photo,
                                         photo_to_sketch=flow.photo_to_sketch))) as zin, \
            zipfile.ZipFile(lying_buf, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "sketch_to_photo.npy":
                data = data.replace(b"(12, 16, 16, 2)", b"(12,160, 16, 2)", 1)
            zout.writestr(info.filename, data)
    lying = lying_buf.getvalue()
    many = {f"extra{i}": np.zeros(1) for i in range(40)}
    return {
        # good
        "flow.json": dumps(good_json),
        "flow.json.gz": gzip.compress(dumps(good_json)),
        "flow.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch),
        "flow-f16.npz": _deflated_npz(**names, sketch_to_photo=flow.sketch_to_photo.astype(np.float16),
                                      photo_to_sketch=flow.photo_to_sketch.astype(np.float16)),
        "kps.npz": _npz(**names, sketch_to_photo=kp_ok, photo_to_sketch=kp_ok, kind=np.array("keypoints")),
        "confidence.json": dumps(with_conf.to_json_dict()),
        "confidence.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch,
                               sketch_to_photo_confidence=conf["sketch_to_photo"],
                               photo_to_sketch_confidence=conf["photo_to_sketch"]),
        # hostile JSON
        "object-bomb.json.gz": gzip.compress(b'{"psc6k_submission": 1, "kind": "flow", "junk": ['
                                             + b"[]," * 2_000_000 + b"[]]}"),
        "junk-in-pair.json": mutate(lambda o: o["pairs"][3].update(junk=[[]] * 1000)),
        "version-float.json": mutate(lambda o: o.update(psc6k_submission=1.0)),
        "version-bool.json": mutate(lambda o: o.update(psc6k_submission=True)),
        "bool-in-floats.json": mutate(lambda o: o["pairs"][2]["sketch_to_photo"][0][0].__setitem__(0, True)),
        "string-number.json": mutate(lambda o: o["pairs"][2]["sketch_to_photo"][0][0].__setitem__(0, "0.5")),
        "null.json": mutate(lambda o: o["pairs"][2]["sketch_to_photo"][0][0].__setitem__(0, None)),
        "int64-min.json": mutate(lambda o: o["pairs"][2]["sketch_to_photo"][0][0].__setitem__(0, -2**63)),
        "ragged.json": mutate(lambda o: o["pairs"][2]["sketch_to_photo"][0].pop()),
        "nan.json": dumps(good_json).replace(b"[", b"[NaN, ", 1),
        "huge-flow.json": mutate(lambda o: o["pairs"][0].update(sketch_to_photo=[[[0.0, 0.0]] * 300] * 2)),
        "half-confidence.json": mutate(lambda o: o["pairs"][0].update(sketch_to_photo_confidence=[[0.0] * 16] * 16)),
        "top-array.json": b"[1, 2]",
        "truncated.json": dumps(good_json)[:5000],
        "truncated.json.gz": gzip.compress(dumps(good_json))[:-40],
        "empty.json": b"",
        "garbage.bin": b"\x00\x01\x02garbage",
        "gzip-in-gzip.json.gz": gzip.compress(gzip.compress(dumps(good_json))),
        "gzip-bomb.json.gz": gzip.compress(b'{"method": "' + b"a[" * (LIMIT_MB * 2**20)),
        "gzip-pairs-bomb.json.gz": gzip.compress(b'{"psc6k_submission": 1, "kind": "keypoints", "pairs": ['
                                                 + b'{"photo": "p", "sketch": "s", "sketch_to_photo": [[1, 2], [1, 2], '
                                                   b'[1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]], "photo_to_sketch": '
                                                   b'[[1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]]},'
                                                 * 90_000),
        # hostile NPZ
        "uint8-flows.npz": _deflated_npz(**names, sketch_to_photo=np.zeros((n, 2500, 2500, 2), np.uint8)[:1],
                                         photo_to_sketch=np.zeros((1, 2, 2, 2), np.uint8)),
        "flows-300.npz": _deflated_npz(**names, sketch_to_photo=np.zeros((n, 300, 300, 2), np.float16),
                                       photo_to_sketch=np.zeros((n, 300, 300, 2), np.float16)),
        "int64-min.npz": _npz(**names, sketch_to_photo=int64_min, photo_to_sketch=int64_min),
        "bool.npz": _npz(**names, sketch_to_photo=np.ones((n, 8, 2), bool), photo_to_sketch=np.ones((n, 8, 2), bool)),
        "pickle.npz": _npz(photo=np.array(flow.photo, dtype=object), sketch=names["sketch"],
                           sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch),
        "lying-header.npz": lying,
        "unknown-member.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo, photo_to_sketch=flow.photo_to_sketch,
                                   notes=np.zeros(3)),
        "too-many-members.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo,
                                     photo_to_sketch=flow.photo_to_sketch, **many),
        "encrypted.npz": _encrypted_flag(_npz(**names, sketch_to_photo=flow.sketch_to_photo,
                                              photo_to_sketch=flow.photo_to_sketch)),
        "zip-bomb.npz": _deflated_npz(**names, sketch_to_photo=np.zeros((n, 256, 256, 2)),
                                      photo_to_sketch=np.zeros((n, 256, 256, 2))),
        "half-confidence.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo,
                                    photo_to_sketch=flow.photo_to_sketch,
                                    sketch_to_photo_confidence=conf["sketch_to_photo"]),
        "truncated.npz": _npz(**names, sketch_to_photo=flow.sketch_to_photo,
                              photo_to_sketch=flow.photo_to_sketch)[:3000],
        "empty-zip.npz": b"PK\x05\x06" + b"\x00" * 18,
    }


GOOD = {"flow.json", "flow.json.gz", "flow.npz", "flow-f16.npz", "kps.npz", "confidence.json", "confidence.npz"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict")
    ann = make_annotations()
    csv = root / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    files = {}
    for name, data in corpus(ann).items():
        (root / name).write_bytes(data)
        files[name] = root / name
    settings = ServerSettings(annotations=str(csv), db_url=f"sqlite:///{root / 'lb.sqlite'}", seed_published=False,
                              max_decompressed_bytes=LIMIT_MB * 1024 * 1024, n_bootstrap=20)
    with TestClient(create_app(settings)) as client:
        yield {"csv": csv, "files": files, "client": client}


def _cli_verdict(path, csv, capsys):
    capsys.readouterr()
    rc = psc6k_main(["eval", str(path), "-a", str(csv), "--json", "--bootstrap", "20",
                     "--max-decompressed-mb", str(LIMIT_MB)])
    out = capsys.readouterr()
    if rc == 0:
        return True, json.loads(out.out)
    assert rc == 2 and "Traceback" not in out.err, out.err
    line = out.err.strip()
    assert "\n" not in line and len(line) < 600, line
    prefix = "psc6k eval: error: "
    assert line.startswith(prefix), line
    return False, _after_source(line[len(prefix):], str(path))


def _server_verdict(client, path):
    r = client.post("/score", files={"file": (path.name, path.read_bytes())})
    assert r.status_code in (200, 413, 422), (r.status_code, r.text)
    if r.status_code == 200:
        body = r.json()
        body.pop("submission_id")
        return True, body
    detail = r.json()["detail"]
    return False, _after_source(detail, path.name)


def _after_source(message: str, source: str) -> str:
    """The message without the file name it starts with (the CLI names the path, the server the upload)."""
    assert message.startswith(source) and message[len(source)] in ",:", message
    return message[len(source):]


@pytest.mark.parametrize("name", sorted(corpus(make_annotations())))
def test_cli_and_server_give_the_same_verdict(setup, capsys, name):
    path = setup["files"][name]
    cli = _cli_verdict(path, setup["csv"], capsys)
    server = _server_verdict(setup["client"], path)
    assert cli == server
    assert cli[0] == (name in GOOD), cli


def test_confidence_round_trips(setup):
    from psc6k.submission import load_submission

    a = load_submission(setup["files"]["confidence.json"])
    b = load_submission(setup["files"]["confidence.npz"])
    assert set(a.confidence) == {"sketch_to_photo", "photo_to_sketch"}
    for d in a.confidence:
        np.testing.assert_array_equal(a.confidence[d], b.confidence[d])
        assert a.confidence[d].shape == a.sketch_to_photo.shape[:3]
    assert load_submission(setup["files"]["flow.npz"]).confidence is None
