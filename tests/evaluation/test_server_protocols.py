"""The scoring server: provenance in replies and entries, the doctor's top suspect in the reply,
and ranking only within one evaluation protocol."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from fastapi.testclient import TestClient

from evaluation.server import db
from evaluation.server.app import create_app
from evaluation.server.leaderboard import evaluation_protocol_reason, rank
from evaluation.server.settings import ServerSettings
from psc6k.formats import write_test_pairs_ps
from psc6k.protocols import PROTOCOLS
from psc6k.submission import save_submission
from psc6k.testing import make_annotations, make_keypoint_submission

NPZ = {"content-type": "application/octet-stream"}
ADMIN = {"authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("proto")
    ann = make_annotations()
    write_test_pairs_ps(ann, root / "test_pairs_ps.csv")
    good = make_keypoint_submission(ann, noise_px=3)
    swapped = make_keypoint_submission(ann, noise_px=3, method="swapped")
    swapped.sketch_to_photo, swapped.photo_to_sketch = swapped.sketch_to_photo[..., ::-1], swapped.photo_to_sketch[..., ::-1]
    return {"csv": root / "test_pairs_ps.csv", "good": save_submission(good, root / "good.npz").read_bytes(),
            "swapped": save_submission(swapped, root / "swapped.npz").read_bytes()}


def client(files, tmp_path, **overrides):
    settings = ServerSettings(annotations=str(files["csv"]), db_url=f"sqlite:///{tmp_path / 'b.sqlite'}",
                              admin_token="admin-secret", n_bootstrap=20, **overrides)
    return TestClient(create_app(settings))


def test_reply_carries_provenance_and_the_doctors_suspect(files, tmp_path):
    with client(files, tmp_path) as c:
        good = c.post("/score", content=files["good"], headers=NPZ)
        assert good.status_code == 200, good.text
        body = good.json()
        assert "doctor" not in body or body["doctor"] is None
        assert body["provenance"]["annotations_sha256"] == hashlib.sha256(files["csv"].read_bytes()).hexdigest()
        assert body["provenance"]["protocol_sha256"] == PROTOCOLS["psc6k"].sha256
        bad = c.post("/score", content=files["swapped"], headers=NPZ).json()
        assert bad["doctor"]["fix"] == "swap_xy" and bad["doctor"]["numpy"] == ["pred = pred[..., ::-1]"]
        assert bad["doctor"]["gain"] > 50 and bad["doctor"]["pck@0.10"] == 100.0


def test_private_reply_names_the_fix_without_fixed_scores(files, tmp_path):
    with client(files, tmp_path, private=True, split_name="hidden") as c:
        token = c.post("/admin/tokens", json={"name": "t", "daily_quota": 5}, headers=ADMIN).json()["token"]
        r = c.post("/score", content=files["swapped"], headers={**NPZ, "authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        doctor = r.json()["doctor"]
        assert doctor["fix"] == "swap_xy" and "gain" not in doctor and "pck@0.10" not in doctor


def test_entries_carry_provenance(files, tmp_path):
    with client(files, tmp_path) as c:
        token = c.post("/admin/tokens", json={"name": "t"}, headers=ADMIN).json()["token"]
        r = c.post("/submissions", content=files["good"], headers={**NPZ, "authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        board = c.get("/leaderboard").json()
        mine = next(e for e in board["ranked"] if e["id"] == r.json()["entry_id"])
        assert mine["provenance"]["protocol"] == "psc6k"
        assert mine["provenance"]["annotations_sha256"] == hashlib.sha256(files["csv"].read_bytes()).hexdigest()


def entry(i, pck, provenance=None):
    return db.Entry(id=f"e{i}", method=f"m{i}", split="s", scorer_version="v", pck05=pck, pck10=pck, ranked=True,
                    source="submission", annotations_sha256="abc", created_at=dt.datetime(2026, 1, 1, 0, 0, i),
                    scores={"provenance": provenance} if provenance is not None else {})


def test_leaderboard_ranks_only_within_one_evaluation_protocol():
    paper = {"protocol": "psc6k", "protocol_sha256": PROTOCOLS["psc6k"].sha256}
    other = {"protocol": "sketchfusion", "protocol_sha256": PROTOCOLS["sketchfusion"].sha256}
    entries = [entry(1, 50.0, paper), entry(2, 90.0, other), entry(3, 40.0)]  # e3: stored before provenance
    ranked, unranked = rank(entries, "abc")
    assert [e.id for _, e in ranked] == ["e1", "e3"]
    assert [(reason, e.id) for reason, e in unranked] == [
        ("scored under evaluation protocol 'sketchfusion', not this server's 'psc6k'", "e2")]
    assert evaluation_protocol_reason(entry(4, 1.0, paper)) is None
