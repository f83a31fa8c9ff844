"""Leaderboard server: tokens, quotas, ranking, private mode, HTML, /models, token CLI.

Every test runs on SQLite and on PostgreSQL (``PSC6K_TEST_POSTGRES_EVAL_URL``, else
``PSC6K_TEST_POSTGRES_URL``; skipped when neither is set, except under ``CI=true`` where a
missing PostgreSQL is a failure). The tables of the server are dropped at the start of each test.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from evaluation.server import db
from evaluation.server.app import create_app
from evaluation.server.leaderboard import rank
from evaluation.server.private import PRIVATE_KEYS, pck_step, private_reply
from evaluation.server.seed import PUBLISHED
from evaluation.server.settings import ServerSettings
from evaluation.server.testdata import wait_until_healthy
from psc6k.testing import make_annotations, make_flow_submission, make_keypoint_submission
from psc6k.cli import main as psc6k_main
from psc6k.formats import write_test_pairs_ps
from psc6k.submission import save_submission

ADMIN = {"authorization": "Bearer admin-secret"}
NPZ = {"content-type": "application/octet-stream"}
POSTGRES_ENV = "PSC6K_TEST_POSTGRES_URL"
#: .ci/run gives the evaluation server its own database; PSC6K_TEST_POSTGRES_URL is the fallback.
POSTGRES_EVAL_ENV = "PSC6K_TEST_POSTGRES_EVAL_URL"


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_EVAL_ENV) or os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but neither {POSTGRES_EVAL_ENV} nor {POSTGRES_ENV} is set: the leaderboard "
                        "must be tested on PostgreSQL")
        pytest.skip(f"{POSTGRES_EVAL_ENV} / {POSTGRES_ENV} not set")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leaderboard.sqlite'}"
    url = _postgres_url()
    engine = db.make_engine(url)
    try:
        db.Base.metadata.drop_all(engine)  # a clean board for every test
    except Exception as exc:  # server down: a failure under CI, else a skip
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} unreachable: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    ann = make_annotations()
    write_test_pairs_ps(ann, root / "test_pairs_ps.csv")
    out = {"ann": ann, "csv": root / "test_pairs_ps.csv"}
    out["good"] = save_submission(make_keypoint_submission(ann, noise_px=10), root / "good.npz").read_bytes()
    out["better"] = save_submission(make_keypoint_submission(ann, noise_px=3, seed=5), root / "better.npz").read_bytes()
    out["flow"] = save_submission(make_flow_submission(ann), root / "flow.npz").read_bytes()
    bad = make_keypoint_submission(ann)
    out["bad"] = save_submission(bad, root / "bad.json").read_bytes().replace(b'"pairs":[{', b'"pairs":[{"x":1,', 1)
    out["bad"] = out["bad"].replace(b'"psc6k_submission":1', b'"psc6k_submission":7')
    return out


def make_client(files, db_url, **overrides) -> TestClient:
    options = {"admin_token": "admin-secret", "n_bootstrap": 50, **overrides}
    settings = ServerSettings(annotations=str(files["csv"]), db_url=db_url, **options)
    return TestClient(create_app(settings))


@pytest.fixture
def client(files, db_url):
    with make_client(files, db_url) as c:
        yield c


def new_token(client, name="team-a", quota=None) -> str:
    r = client.post("/admin/tokens", json={"name": name, "daily_quota": quota}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["token"].startswith("psc6k_")
    return r.json()["token"]


def submit(client, token, body, **params):
    headers = {**NPZ, **({"authorization": f"Bearer {token}"} if token else {})}
    if body[:1] == b"{":
        headers["content-type"] = "application/json"
    return client.post("/submissions", content=body, headers=headers, params=params)


# --------------------------------------------------------------------------- seeds and ranking
def test_board_is_seeded_with_everything_published_but_ranks_none_on_other_annotations(client):
    # 12 random pairs: not the full PSC6K test set, so no published number is ranked beside them
    board = client.get("/leaderboard").json()
    assert board["ranked"] == [] and board["unranked"] == []
    assert board["protocol_id"].startswith("annotations:") and "12 pairs" in board["protocol"]["split"]
    rows = board["published"]
    assert len(rows) == len(PUBLISHED) == 35
    assert all(r["reported_in_paper"] and r["scorer_version"] == "paper" and r["badge"] == "reported"
               and not r["ranked"] and r["rank"] is None for r in rows)
    by_view = {}
    for r in rows:
        by_view.setdefault((r["view"], r["protocol_id"]), []).append(r)
    main = by_view[("main", "psc6k-test")]
    assert sorted((r["overall"]["pck@0.05"], r["overall"]["pck@0.10"]) for r in main) == sorted([
        (50.55, 78.18), (40.52, 69.91), (28.62, 63.95), (52.36, 81.80), (27.59, 57.71), (35.65, 68.76),
        (40.60, 63.50), (42.43, 66.53), (35.77, 71.24), (48.79, 71.43), (19.19, 42.57), (43.55, 78.60),
        (56.78, 79.70), (56.38, 83.22), (58.00, 84.93)])  # SPEC §7, Tables 1 and 4
    assert all("full PSC6K test set" in r["unranked_reason"] for r in main)
    ablations = {r["citation"]["row"]: (r["overall"]["pck@0.05"], r["overall"]["pck@0.10"])
                 for r in by_view[("ablation", "psc6k-test")]}
    assert ablations == {  # SPEC §7, Tables 2, 3, 5
        "ImageNet only": (17.20, 48.92), "CL on individual image": (44.24, 75.84),
        "CL on image class": (54.73, 81.78), "CL on image pair": (56.38, 83.22), "no L_sim": (17.46, 49.43),
        "no perceptual L_sim": (49.31, 80.61), "no L_con": (52.25, 80.38), "no weight function": (54.11, 82.51),
        "no multiple feature layers": (55.20, 83.28), "no conditional BN": (55.84, 82.67),
        "complete": (56.38, 83.22), "N=10": (56.05, 82.96), "N=20": (55.88, 82.85)}
    assert all(r["unranked_reason"].startswith("ablation (Table") for r in by_view[("ablation", "psc6k-test")])
    sketchfusion = by_view[("main", "sketchfusion-split")]
    assert {r["method"]: (r["overall"]["pck@0.05"], r["overall"]["pck@0.10"]) for r in sketchfusion} == {
        "SketchFusion": (70.31, 89.86), "B-CLIP": (22.29, 30.41), "B-DINO": (34.21, 48.59),
        "B-DINOv2": (39.91, 56.46), "B-SD": (41.42, 58.71), "B-SD+CLIP": (44.90, 62.02),
        "B-Finetuning": (11.58, 17.69)}  # SketchFusion Table 4 (SPEC §7)
    assert all(r["unranked_reason"].startswith("different protocol") for r in sketchfusion)
    assert "first 30" in sketchfusion[0]["protocol"]["split"]
    for r in rows:
        assert r["citation"]["paper"] and r["citation"]["table"] and r["citation"]["row"]
        assert set(r["protocol"]) >= {"split", "threshold_basis", "resolution", "averaging"}


def test_full_test_set_ranks_the_papers_main_table_only(db_url, tmp_path):
    full = make_annotations(125, 10, 5)
    write_test_pairs_ps(full, tmp_path / "test_pairs_ps.csv")
    settings = ServerSettings(annotations=str(tmp_path / "test_pairs_ps.csv"), db_url=db_url, n_bootstrap=10,
                              admin_token="admin-secret")
    with TestClient(create_app(settings)) as c:
        board = c.get("/leaderboard").json()
        assert board["protocol_id"] == "psc6k-test"
        ranked = board["ranked"]
        assert len(ranked) == 15 and all(r["view"] == "main" and r["protocol_id"] == "psc6k-test" for r in ranked)
        assert ranked[0]["method"] == "PSCNet" and ranked[0]["encoder"] == "ResNet-101" and ranked[0]["rank"] == 1
        assert [r["overall"]["pck@0.05"] for r in ranked] == sorted((r["overall"]["pck@0.05"] for r in ranked),
                                                                    reverse=True)
        assert {r["view"] for r in board["published"]} == {"ablation", "main"}
        assert {r["protocol_id"] for r in board["published"] if r["view"] == "main"} == {"sketchfusion-split"}
        by10 = c.get("/leaderboard", params={"sort_by": "pck@0.10"}).json()["ranked"]
        assert [r["overall"]["pck@0.10"] for r in by10] == sorted((r["overall"]["pck@0.10"] for r in ranked),
                                                                  reverse=True)
        token = new_token(c)
        sub = save_submission(make_keypoint_submission(full, noise_px=9, seed=3), tmp_path / "s.npz").read_bytes()
        reply = submit(c, token, sub, method="mine")
        assert reply.status_code == 200, reply.text
        board = c.get("/leaderboard").json()
        (mine,) = [r for r in board["ranked"] if r["badge"] == "verified here"]
        assert mine["protocol_id"] == "psc6k-test" and mine["rank"] == reply.json()["rank"]
        html = c.get("/leaderboard.html").text
        assert "verified here" in html and "Ablations" in html and "different split" in html


def test_server_protocol_needs_the_whole_test_set():
    from evaluation.server.leaderboard import server_protocol

    assert server_protocol(make_annotations(125, 10, 5), "ab" * 32)[0] == "psc6k-test"
    assert server_protocol(make_annotations(125, 10, 5), "ab" * 32, private=True)[0] == "annotations:abababababab"
    assert server_protocol(make_annotations(125, 10, 4), "cd" * 32)[0] == "annotations:cdcdcdcdcdcd"
    assert server_protocol(make_annotations(124, 10, 5), "cd" * 32)[0].startswith("annotations:")


def test_seeding_is_idempotent(files, db_url):
    with make_client(files, db_url):
        pass
    with make_client(files, db_url) as c:
        assert len(c.get("/leaderboard").json()["published"]) == len(PUBLISHED)


def test_rank_never_ranks_missing_or_non_finite_scores():
    now = dt.datetime(2024, 1, 1)
    mk = lambda i, a, b, **kw: db.Entry(id=str(i), method=f"m{i}", scorer_version="v", pck05=a, pck10=b,  # noqa
                                        ranked=kw.get("ranked", True), source=kw.get("source", "submitted"),
                                        annotations_sha256=kw.get("sha", "S"), created_at=now + dt.timedelta(i))
    entries = [mk(1, 50.0, 80.0), mk(2, float("nan"), 99.0), mk(3, None, 99.0), mk(4, 99.0, float("inf")),
               mk(5, 60.0, 70.0), mk(6, 60.0, 70.0), mk(7, 99.9, 99.9, sha="OTHER"), mk(8, 99.0, 99.0, ranked=False),
               mk(9, 60.0, 75.0), mk(10, 10.0, 10.0, source="paper", sha=None)]
    ranked, unranked = rank(entries, "S")
    assert [(r, e.id) for r, e in ranked] == [(1, "9"), (2, "5"), (2, "6"), (4, "1"), (5, "10")]
    assert {e.id: why for why, e in unranked} == {
        "2": "missing or non-finite score", "3": "missing or non-finite score", "4": "missing or non-finite score",
        "7": "scored against different annotations than this server's", "8": "missing or non-finite score"}


def test_stored_non_finite_scores_are_listed_unranked(client, files):
    token = new_token(client)
    r = submit(client, token, files["good"])
    assert r.status_code == 200, r.text
    entry_id = r.json()["entry_id"]
    engine = client.app.state.psc6k.engine
    with engine.begin() as conn:  # a broken re-run leaves NaN behind
        conn.execute(update(db.Entry).where(db.Entry.id == entry_id).values(pck05=float("nan")))
    board = client.get("/leaderboard").json()
    assert entry_id not in [e["id"] for e in board["ranked"]]
    (row,) = [e for e in board["unranked"] if e["id"] == entry_id]
    assert row["unranked_reason"] == "missing or non-finite score" and row["overall"]["pck@0.05"] is None
    assert "unranked" in client.get("/leaderboard.html").text


# --------------------------------------------------------------------------- submissions and auth
def test_submission_is_stored_with_metadata_and_ranked(client, files, capsys):
    token = new_token(client)
    r = submit(client, token, files["better"], method="My method", paper_url="https://example.org/paper",
               encoder="ResNet-50", supervision="keypoint", description="test run")
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["ranked"] and reply["rank"] == 1 and reply["quota_left_today"] == 4
    # The stored scores are the scorer's, with its version.
    capsys.readouterr()
    path = files["csv"].parent / "better.npz"
    assert psc6k_main(["eval", str(path), "--annotations", str(files["csv"]), "--json", "--bootstrap", "50"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert {k: reply[k] for k in expected} == expected
    board = client.get("/leaderboard").json()
    top = board["ranked"][0]
    assert top["id"] == reply["entry_id"] and top["method"] == "My method" and top["encoder"] == "ResNet-50"
    assert top["supervision"] == "keypoint" and top["paper_url"] == "https://example.org/paper"
    assert top["submitter"] == "team-a" and not top["reported_in_paper"]
    assert top["scorer_version"] == expected["scorer_version"]
    assert top["overall"] == expected["overall"] and top["per_category"] == expected["per_category"]
    assert client.get(f"/submissions/{reply['entry_id']}").json()["rank"] == 1
    assert client.get("/submissions/nope").status_code == 404


def test_submission_needs_a_valid_token(client, files):
    assert submit(client, None, files["good"]).status_code == 401
    assert submit(client, "psc6k_wrong", files["good"]).status_code == 401
    r = client.post("/submissions", content=files["good"], headers={**NPZ, "authorization": "Basic abc"})
    assert r.status_code == 401
    token = new_token(client)
    assert submit(client, token, files["good"]).status_code == 200
    (info,) = client.get("/admin/tokens", headers=ADMIN).json()
    assert "token" not in info and "token_hash" not in info and token.startswith(info["prefix"])
    assert client.delete(f"/admin/tokens/{info['id']}", headers=ADMIN).status_code == 200
    r = submit(client, token, files["good"])
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.delete("/admin/tokens/999", headers=ADMIN).status_code == 404


def test_tokens_are_stored_hashed(client):
    token = new_token(client)
    with db.Session(client.app.state.psc6k.engine) as s:
        (row,) = s.scalars(db.select(db.Token)).all()
    assert row.token_hash == db.hash_token(token) and token not in (row.token_hash, row.prefix)


def test_admin_api_needs_the_admin_token(client, files, db_url):
    assert client.post("/admin/tokens", json={"name": "x"}).status_code == 401
    assert client.post("/admin/tokens", json={"name": "x"}, headers={"authorization": "Bearer no"}).status_code == 401
    token = new_token(client)
    assert client.get("/admin/tokens", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert client.post("/admin/tokens", json={"name": " "}, headers=ADMIN).status_code == 422
    assert client.post("/admin/tokens", json={"name": "x", "daily_quota": -1}, headers=ADMIN).status_code == 422
    with make_client(files, db_url, admin_token=None) as c:
        if not os.environ.get("PSC6K_ADMIN_TOKEN"):
            r = c.post("/admin/tokens", json={"name": "x"}, headers=ADMIN)
            assert r.status_code == 403 and "PSC6K_ADMIN_TOKEN" in r.json()["detail"]


def test_admin_can_hide_an_entry(client, files):
    token = new_token(client)
    entry_id = submit(client, token, files["good"]).json()["entry_id"]
    assert client.patch(f"/admin/entries/{entry_id}", json={"hidden": True}, headers=ADMIN).json()["hidden"]
    board = client.get("/leaderboard").json()
    assert entry_id not in [e["id"] for e in board["ranked"] + board["unranked"]]
    assert client.get(f"/submissions/{entry_id}").status_code == 404


def test_bad_metadata_is_refused_before_scoring(client, files):
    token = new_token(client, quota=1)
    assert submit(client, token, files["good"], supervision="magic").status_code == 422
    assert submit(client, token, files["good"], paper_url="javascript:alert(1)").status_code == 422
    assert submit(client, token, files["good"], method="x" * 201).status_code == 422
    assert client.get("/me", headers={"authorization": f"Bearer {token}"}).json()["quota_left_today"] == 1


def test_hostile_strings_never_break_storage_or_replies(client, files):
    """NUL, controls and lone surrogates (legal in JSON, illegal in PostgreSQL text and UTF-8)
    -> 422 naming the field (the one text rule), never a 500."""
    sub = json.loads(save_submission(make_keypoint_submission(files["ann"]), files["csv"].parent / "h.json")
                     .read_text())
    sub["method"] = "a\ud800\x00b"
    body = json.dumps(sub).encode()
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.json()["detail"]  # not Unicode: the strict reader refuses
    sub["method"] = "a\x00\x01b"
    r = client.post("/score", content=json.dumps(sub).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("method: character U+0000")
    sub["method"] = "a  b"
    body = json.dumps(sub).encode()
    for name in (b'"x\\ud800"', b'"x\\u0000"'):
        r = client.post("/admin/tokens", content=b'{"name": ' + name + b"}",
                        headers={**ADMIN, "content-type": "application/json"})
        assert r.status_code == 422
    token = new_token(client)
    r = submit(client, token, body)
    assert r.status_code == 200, r.text
    assert submit(client, token, body, method="\x00x").status_code == 422
    (mine,) = [e for e in client.get("/leaderboard").json()["ranked"] if not e["reported_in_paper"]]
    assert mine["method"] == "a  b"
    assert client.get("/leaderboard.html").status_code == 200


# --------------------------------------------------------------------------- quotas
def test_quota_counts_only_accepted_submissions(client, files):
    token = new_token(client, quota=2)
    me = lambda: client.get("/me", headers={"authorization": f"Bearer {token}"}).json()  # noqa: E731
    assert me()["quota_left_today"] == 2
    for _ in range(3):  # validation failures never count
        r = submit(client, token, files["bad"])
        assert r.status_code == 422, r.text
    assert submit(client, token, b"PK\x03\x04broken").status_code == 422
    assert me()["quota_left_today"] == 2
    assert submit(client, token, files["good"]).json()["quota_left_today"] == 1
    assert submit(client, token, files["flow"]).json()["quota_left_today"] == 0
    r = submit(client, token, files["good"])
    assert r.status_code == 429 and "quota" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
    # Another token has its own quota; yesterday's submissions do not count today.
    other = new_token(client, name="team-b", quota=1)
    assert submit(client, other, files["good"]).status_code == 200
    engine = client.app.state.psc6k.engine
    with engine.begin() as conn:
        conn.execute(update(db.Entry).values(created_at=db.utcnow() - dt.timedelta(days=1)))
    assert me()["quota_left_today"] == 2
    assert submit(client, token, files["good"]).status_code == 200


def test_default_quota_from_settings(files, db_url):
    with make_client(files, db_url, daily_quota=1) as c:
        token = new_token(c)
        assert submit(c, token, files["good"]).status_code == 200
        assert submit(c, token, files["good"]).status_code == 429


def test_quota_check_and_insert_is_atomic(client):
    """Concurrent inserts (threads on the same database) never overrun the quota."""
    engine = client.app.state.psc6k.engine
    token_row, _ = db.create_token(engine, "racer", daily_quota=3)
    results, barrier = [], threading.Barrier(8)

    def worker(i):
        barrier.wait()
        entry = db.Entry(id=db.new_id(), method=f"m{i}", scorer_version="v", pck05=1.0, pck10=2.0, ranked=True)
        try:
            db.record_counted(engine, token_row.id, 5, entry)
            results.append("ok")
        except db.QuotaExceeded:
            results.append("quota")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 3 + ["quota"] * 5


# --------------------------------------------------------------------------- private mode
def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _lists(obj):
    if isinstance(obj, list):
        yield obj
        for v in obj:
            yield from _lists(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _lists(v)


def test_private_mode_replies_only_aggregates(files, db_url):
    ann = files["ann"]
    with make_client(files, db_url, private=True, split_name="hidden") as c:
        assert c.post("/score", content=files["good"], headers=NPZ).status_code == 401  # no anonymous oracle
        token = new_token(c, quota=3)
        auth = {"authorization": f"Bearer {token}"}
        replies = [c.post("/score", content=files["good"], headers={**NPZ, **auth}),
                   submit(c, token, files["better"], method="hidden-test")]
        for r in replies:
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) - {"submission_id", "entry_id", "ranked", "rank", "unranked_reason",
                                "quota_left_today"} == set(PRIVATE_KEYS)
            assert "per_category" not in body and "per_pair" not in body
        everything = [r.json() for r in replies] + [c.get("/leaderboard").json(), c.get("/models").json(),
                                                   c.get(f"/submissions/{replies[1].json()['entry_id']}").json()]
        text = json.dumps(everything) + c.get("/leaderboard.html").text
        for path in ann.photo + ann.sketch:  # no pair is ever named
            assert path not in text
        for category in set(ann.category):
            assert f'"{category}"' not in text
        numeric = [x for reply in everything for x in _lists(reply)
                   if x and all(isinstance(v, (int, float)) for v in x)]
        assert numeric and all(len(x) <= 4 for x in numeric)  # CI bounds, alphas; never per-pair arrays
        (entry,) = everything[2]["ranked"]  # the paper's numbers are for the public split: not seeded
        assert entry["method"] == "hidden-test" and entry["per_category"] is None
        # quota: the anonymous-oracle guard counts /score too (2 used of 3)
        assert c.get("/me", headers=auth).json()["quota_left_today"] == 1
        # errors do not name pairs of the hidden split, only the submitter's own
        sub = make_keypoint_submission(ann)
        sub.photo, sub.sketch = sub.photo[:-1], sub.sketch[:-1]
        sub.sketch_to_photo, sub.photo_to_sketch = sub.sketch_to_photo[:-1], sub.photo_to_sketch[:-1]
        buf = io.BytesIO()
        np.savez(buf, photo=np.array(sub.photo), sketch=np.array(sub.sketch), sketch_to_photo=sub.sketch_to_photo,
                 photo_to_sketch=sub.photo_to_sketch)
        r = c.post("/score", content=buf.getvalue(), headers={**NPZ, **auth})
        assert r.status_code == 422 and "1 of 12 pairs of the hidden split are missing" in r.json()["detail"]
        assert ann.sketch[-1] not in r.text


def _probe(ann, pair: int, kp: int, xy, *, base=None) -> bytes:
    """A keypoint submission (``base`` or ground truth + 0.4 px) with sketch->photo keypoint
    ``kp`` of pair ``pair`` put at ``xy``."""
    sub = base or make_keypoint_submission(ann, noise_px=0.4, seed=9)
    s2p = np.array(sub.sketch_to_photo, dtype=np.float64)
    s2p[pair, kp] = xy
    buf = io.BytesIO()
    np.savez(buf, photo=np.array(sub.photo), sketch=np.array(sub.sketch), sketch_to_photo=s2p,
             photo_to_sketch=np.array(sub.photo_to_sketch, dtype=np.float64))
    return buf.getvalue()


def _four_probe_attack(ann, post, pair=5, kp=3):
    """The attack of issue #20: one keypoint at +-1e6 on x, then on y; the differences of the
    replies' mean error give the hidden keypoint (None when the replies carry no mean error).
    Returns (recovered (x, y) or None, the four replies)."""
    big = 1e6
    x0, y0 = 128.0, 128.0
    replies = [post(_probe(ann, pair, kp, xy)) for xy in ((big, y0), (-big, y0), (x0, big), (x0, -big))]
    errs = [r.get("mean_error_px", {}) or {} for r in replies]
    if not all("sketch_to_photo" in e for e in errs):
        return None, replies
    n = len(ann) * 8  # keypoints in the direction's mean
    # e(+big) - e(-big) = -2 h (to 1e-6 px at this distance): the mean moves by that / n
    hx = (errs[1]["sketch_to_photo"] - errs[0]["sketch_to_photo"]) * n / 2
    hy = (errs[3]["sketch_to_photo"] - errs[2]["sketch_to_photo"]) * n / 2
    return (hx, hy), replies


def _scores(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k not in ("submission_id",)}


def test_private_replies_defeat_the_four_probe_attack(files, db_url):
    ann = files["ann"]
    truth = ann.photo_kps[5, 3]
    with make_client(files, db_url) as c:  # public: the attack works, so this test can see it
        found, _ = _four_probe_attack(ann, lambda b: c.post("/score", content=b, headers=NPZ).json())
        assert found is not None and np.allclose(found, truth, atol=1e-3)
    with make_client(files, db_url, private=True, daily_quota=50) as c:
        auth = {**NPZ, "authorization": f"Bearer {new_token(c, quota=50)}"}

        def post(body):
            r = c.post("/score", content=body, headers=auth)
            assert r.status_code == 200, r.text
            return r.json()

        found, replies = _four_probe_attack(ann, post)
        assert found is None  # no error aggregate to difference
        assert all(set(r) == {"submission_id", *PRIVATE_KEYS} for r in replies)
        assert all(_scores(r) == _scores(replies[0]) for r in replies)  # the four probes are indistinguishable
        step = replies[0]["pck_step"]
        assert step == pck_step(len(ann)) == 5.0
        for value in [*replies[0]["overall"].values(),
                      *(v for row in replies[0]["per_direction"].values() for v in row.values())]:
            assert abs(value / step - round(value / step)) < 1e-9  # every PCK on the stated grid
        # one keypoint flipped from right to far away: hidden by the rounding
        good = post(_probe(ann, 5, 3, ann.photo_kps[5, 3]))
        far = post(_probe(ann, 5, 3, (1e6, 1e6)))
        assert _scores(good) == _scores(far)
        # ... while a step's worth of keypoints does move it (the rounding does not hide everything)
        sub = make_keypoint_submission(ann, noise_px=0.4, seed=9)
        s2p = np.array(sub.sketch_to_photo)
        s2p[:3] = 1e6  # 24 keypoints of 96
        sub.sketch_to_photo = s2p
        many = post(save_submission(sub, files["csv"].parent / "many.npz").read_bytes())
        assert many["per_direction"]["sketch_to_photo"]["pck@0.10"] < good["per_direction"]["sketch_to_photo"]["pck@0.10"]


def test_private_reply_rounds_to_the_stated_step():
    full = {"method": "m", "kind": "keypoints", "overall": {"pck@0.05": 56.3849, "pck@0.10": float("nan")},
            "per_direction": {"sketch_to_photo": {"pck@0.05": 56.351, "pck@0.10": 84.949}},
            "per_category": {"airplane": {"pck@0.05": 1.0}}, "mean_error_px": {"overall": 12.34},
            "ci95": {"pck@0.05": [55.0, 57.0]}, "n_pairs": 6250, "n_annotated": 6250, "coverage": 1.0,
            "protocol": {}, "scorer_version": "v", "provenance": {"protocol": "psc6k"},
            "per_keypoint": {"sketch_to_photo": {"pck@0.05": [56.0] * 8}},
            "doctor": {"fix": "swap_xy", "words": "w", "numpy": ["pred = pred[..., ::-1]"], "hint": "h",
                       "gain": 40.123, "pck@0.05": 96.4, "pck@0.10": 99.1, "threshold_points": 5.0}}
    out = private_reply(full)
    # the doctor's fix stays, its fixed scores (more scorings of the hidden split) do not
    assert out.pop("doctor") == {"fix": "swap_xy", "words": "w", "numpy": ["pred = pred[..., ::-1]"], "hint": "h"}
    assert out["pck_step"] == 0.1
    assert out["overall"] == {"pck@0.05": 56.4, "pck@0.10": None}
    assert out["per_direction"]["sketch_to_photo"] == {"pck@0.05": 56.4, "pck@0.10": 84.9}
    assert set(out) == set(PRIVATE_KEYS) and full["overall"]["pck@0.05"] == 56.3849  # input untouched
    # the step is worth >= 4 keypoints of one direction: 100 * 4 / (8 * n) percentage points
    assert [pck_step(n) for n in (1, 12, 40, 100, 500, 6250)] == [50.0, 5.0, 2.0, 0.5, 0.1, 0.1]
    for n in (1, 3, 12, 40, 99, 100, 101, 500, 6250, 10**6):
        assert pck_step(n) * 8 * n / 100 >= 4 - 1e-9 and pck_step(n) >= 0.1


# --------------------------------------------------------------------------- pages and models
def test_leaderboard_html_is_self_contained(client, files):
    token = new_token(client)
    submit(client, token, files["good"], method="<script>alert(1)</script>")
    page = client.get("/leaderboard.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "reported" in html and "56.38" in html and "84.93" in html and "Tables 1 and 4" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http://" not in html.replace('href="http', "") and "cdn" not in html.lower()
    for asset in ("/static/leaderboard.js", "/static/leaderboard.css"):
        assert asset in html and client.get(asset).status_code == 200
    js = client.get("/static/leaderboard.js").text
    assert "per_category" in js and "sort" in js
    assert client.get("/", follow_redirects=False).headers["location"] == "/leaderboard.html"


def test_models_lists_the_zoo_and_configured_scores(files, db_url, tmp_path, capsys):
    registry = pytest.importorskip("model_zoo.registry")
    capsys.readouterr()
    path = files["csv"].parent / "flow.npz"
    assert psc6k_main(["eval", str(path), "--annotations", str(files["csv"]), "--json"]) == 0
    scores = tmp_path / "scores.json"
    scores.write_text(capsys.readouterr().out)
    with make_client(files, db_url) as c:
        body = c.get("/models").json()
        assert [m["name"] for m in body["models"]] == list(registry.MODELS)
        assert all(m["scores"] is None for m in body["models"]) and "--model-scores" in body["note"]
    with make_client(files, db_url, model_scores=str(scores)) as c:
        first = c.get("/models").json()["models"][0]
        assert first["name"] == list(registry.MODELS)[0]
        assert first["scores"] == json.loads(scores.read_text())


# --------------------------------------------------------------------------- token CLI
def test_token_cli(db_url, capsys, files):
    assert psc6k_main(["serve", "token", "create", "cli-team", "--quota", "1", "--json", "--db", db_url]) == 0
    created = json.loads(capsys.readouterr().out)
    assert psc6k_main(["serve", "token", "list", "--json", "--db", db_url]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "cli-team" and listed["revoked_at"] is None and "token" not in listed
    with make_client(files, db_url) as c:
        assert submit(c, created["token"], files["good"]).status_code == 200
        assert psc6k_main(["serve", "token", "revoke", str(created["id"]), "--db", db_url]) == 0
        assert submit(c, created["token"], files["good"]).status_code == 401
    assert psc6k_main(["serve", "token", "revoke", "12345", "--db", db_url]) == 2
    assert "no token" in capsys.readouterr().err


# --------------------------------------------------------------------------- deployment
@pytest.mark.postgres
def test_two_workers_share_one_postgres_leaderboard(files, tmp_path):
    """`psc6k serve --workers 2` on PostgreSQL: concurrent submissions of one token, spread over
    both workers, never overrun its quota, and both workers see one board."""
    import socket
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    url = _postgres_url()
    engine = db.make_engine(url)
    db.Base.metadata.drop_all(engine)
    db.Base.metadata.create_all(engine)
    _, token = db.create_token(engine, "two-workers", daily_quota=3)
    engine.dispose()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "psc6k", "serve", "--annotations", str(files["csv"]),
                             "--db", url, "--workers", "2", "--port", str(port), "--log-level", "warning",
                             "--bootstrap", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, 90)

        def one(_):  # a fresh connection each time, so the kernel spreads them over the workers
            return httpx.post(base + "/submissions", content=files["good"], timeout=120,
                              headers={**NPZ, "authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(one, range(8)))
        assert statuses == [200] * 3 + [429] * 5
        boards = [httpx.get(base + "/leaderboard", timeout=30).json() for _ in range(6)]
        assert all(sum(not e["reported_in_paper"] for e in b["ranked"]) == 3 for b in boards)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
