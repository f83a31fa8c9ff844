"""The annotation service (annotation_app): assignment invariants, resume, leases, idempotent
clicks, 409/410s, catch trials, admin auth, exports, bad input and path traversal. Every test
runs on SQLite and on PostgreSQL (PSC6K_TEST_POSTGRES_URL; skipped when unset, failing under
CI=true)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from annotation_app import db
from annotation_app.app import create_app
from annotation_app.config import ItemSpec, StudyConfig, load_config
from annotation_app.service import StudyService, iso
from annotation_app.settings import AnnotationSettings
from annotation_app.study import init_study
from annotation_app.testing import FakeClock, check_invariants, make_study_files
from psc6k_web.auth import AdminGuard
from psc6k.aggregate import aggregate_clicks
from psc6k.errors import ConflictError, Psc6kError
from psc6k.formats import read_annotations, read_clicks
from psc6k.groundtruth import REPORT_KEYS

ADMIN = "test-admin-token-123"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
KEY = "test-link-key-1"  # the study link's key=...


def make_app(service, admin_token=ADMIN, **settings):
    return create_app(AnnotationSettings(db_url="unused://", admin_token=admin_token, **settings), service=service)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_study_files(tmp_path_factory.mktemp("study"), n_categories=5, photos_per_category=2)


def make_study(db_url, files, **cfg):
    # no drawn practice unless a test asks: drawn practice pairs leave the study (test_practice_*)
    config = StudyConfig(**{"trials_per_participant": 5, "link_key": KEY, "practice_count": 0, **cfg})
    init_study(db_url, files["pairs"], files["images"], config, files["keypoints"])
    clock = FakeClock()
    service = StudyService(db_url, clock=clock)
    app = make_app(service)
    client = TestClient(app, raise_server_exceptions=False)
    return service, app, client, clock


@pytest.fixture
def study(db_url, files):
    service, app, client, clock = make_study(db_url, files)
    yield service, app, client, clock
    assert app.state.internal_errors == 0, "a request reached the catch-all 500 handler"
    service.close()


def start(client, pid="PID0001"):
    r = client.post("/api/sessions", json={"prolific_pid": pid, "study_id": "S1", "session_id": "X1", "link_key": KEY})
    assert r.status_code in (200, 201), r.text
    return r.json()


def click(client, token, trial_id, x=100.0, y=100.0, client_id=None):
    return client.post(f"/api/sessions/{token}/clicks", json={
        "trial_id": trial_id, "x": x, "y": y, "rt_ms": 1234, "client_id": client_id or f"c-{trial_id}",
        "display": {"width": 512, "dpr": 2, "blur": 0}})


# ----------------------------------------------------------------------------- participant flow
def test_full_session_and_completion(db_url, files):
    service, app, client, clock = make_study(db_url, files, practice_count=3)
    info = client.get("/api/study").json()
    assert info["image_size"] == 256 and len(info["practice"]) == 3
    assert client.get(info["practice"][0]["photo_url"]).status_code == 200
    body = start(client)
    assert body["total"] == 5 and body["next_index"] == 0 and body["status"] == "active"
    assert len({t["category"] for t in body["trials"]}) == 5  # one pair per category
    token = body["session_token"]
    r = client.post(f"/api/sessions/{token}/complete")
    assert r.status_code == 409 and r.json()["missing"] == 5 and "5 trials missing" in r.json()["detail"]
    for i, t in enumerate(body["trials"]):
        img = client.get(t["photo_url"])
        assert img.status_code == 200 and img.content[:3] == b"\xff\xd8\xff"  # the JPEG photo
        clock.t += 2.5  # a person's pace
        r = click(client, token, t["trial_id"])
        assert r.status_code == 201
        assert r.json() == {"trial_id": t["trial_id"], "stored": True, "next_index": i + 1,
                            "answered_count": i + 1, "total": 5}
    r = client.post(f"/api/sessions/{token}/complete")
    assert r.status_code == 200
    assert r.json()["completion_code"] == service.config.completion_code
    assert service.config.completion_code in r.json()["redirect_url"]
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["sessions"] == {"started": 1, "completed": 1, "expired": 0, "active": 0, "flagged": 0,
                                "too_fast": 0, "resume_refused": 0}
    assert prog["slots"] == {"filled": 5, "total": 7 * 8 * 3}  # 10 pairs, 3 drawn for practice
    assert prog["clicks_per_keypoint"] == {"0": 51, "1": 5, "2": 0, "3": 0}
    assert prog["median_trial_ms"] == 1234.0
    (me,) = client.get("/api/admin/participants", headers=AUTH).json()["participants"]
    assert me["median_server_rt_ms"] == pytest.approx(2500.0) and me["too_fast"] is False
    check_invariants(service)
    assert app.state.internal_errors == 0
    service.close()


def test_resume_same_pid_same_plan(study):
    service, _, client, _ = study
    first = start(client, "PIDresume")
    click(client, first["session_token"], first["trials"][0]["trial_id"])
    again = client.post("/api/sessions", json={"prolific_pid": "PIDresume", "study_id": "S1", "session_id": "X1",
                                                "link_key": KEY})
    assert again.status_code == 200
    body = again.json()
    assert body["session_token"] == first["session_token"]
    assert [t["trial_id"] for t in body["trials"]] == [t["trial_id"] for t in first["trials"]]
    assert body["trials"][0]["answered"] and body["next_index"] == 1 and body["answered_count"] == 1
    assert client.get(f"/api/sessions/{first['session_token']}").json() == body | {
        "lease_seconds_left": body["lease_seconds_left"]}
    with service.read.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.sessions)).scalar_one() == 1


def test_resume_is_bound_to_the_prolific_triple(study):
    """The same PROLIFIC_PID from another Prolific session (or study) gets a clear 409, never the
    token; the attempt is recorded for the researcher; the same triple still resumes."""
    service, _, client, clock = study
    first = start(client, "PIDtriple")  # study S1, session X1
    token = first["session_token"]
    for study_id, session_id in (("S1", "X2"), ("S2", "X1"), ("S1", ""), ("", "X1")):
        clock.t += 1
        r = client.post("/api/sessions", json={"prolific_pid": "PIDtriple", "study_id": study_id,
                                               "session_id": session_id, "link_key": KEY})
        assert r.status_code == 409, (study_id, session_id, r.text)
        assert r.json()["code"] == "conflict" and r.json()["reason"] == "other_prolific_session"
        assert r.json()["field"] == "session_id" and "Prolific" in r.json()["detail"]
        assert token not in r.text and "trials" not in r.json()
    assert start(client, "PIDtriple")["session_token"] == token  # a reload (same triple) resumes
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["sessions"]["resume_refused"] == 4 and prog["sessions"]["started"] == 1
    (me,) = client.get("/api/admin/participants", headers=AUTH).json()["participants"]
    assert me["prolific_pid"] == "PIDtriple" and me["resume_refused"] == 4
    assert me["last_resume_refused_at"] == iso(clock.t)
    with service.read.connect() as conn:
        refused = conn.execute(select(db.resume_refusals.c.prolific_study_id, db.resume_refusals.c.prolific_session_id)
                               .order_by(db.resume_refusals.c.id)).all()
    assert [tuple(r) for r in refused] == [("S1", "X2"), ("S2", "X1"), ("S1", ""), ("", "X1")]
    assert client.get("/admin").status_code == 200 and "resume_refused" in client.get("/static/js/admin.js").text


def test_idempotent_retry_and_409s(study):
    service, _, client, _ = study
    body = start(client)
    token, t0, t1 = body["session_token"], body["trials"][0]["trial_id"], body["trials"][1]["trial_id"]
    first = click(client, token, t0, client_id="abc")
    assert first.status_code == 201
    retry = click(client, token, t0, client_id="abc")  # a retry of the same click
    assert retry.status_code == 200 and retry.json() == first.json()
    # the same client_id with other content is not a retry: 409 naming the field, nothing changed
    base = {"trial_id": t0, "x": 100.0, "y": 100.0, "rt_ms": 1234, "client_id": "abc",
            "display": {"width": 512, "dpr": 2, "blur": 0}}
    for field, value in (("x", 3.0), ("y", 100.5), ("rt_ms", 1235), ("rt_ms", None), ("display", {"width": 1}),
                         ("display", None), ("trial_id", t1)):
        r = client.post(f"/api/sessions/{token}/clicks", json={**base, field: value})
        assert r.status_code == 409, (field, r.text)
        assert r.json()["field"] == ("client_id" if field == "trial_id" else field), r.json()
    assert client.post(f"/api/sessions/{token}/clicks", json=base).json() == first.json()
    with service.read.connect() as conn:
        assert conn.execute(select(db.clicks.c.x, db.clicks.c.y, db.clicks.c.rt_ms)).all() == [(100.0, 100.0, 1234.0)]
    other = click(client, token, t0, client_id="def")
    assert other.status_code == 409 and "already answered" in other.json()["detail"]
    reuse = click(client, token, t1, client_id="abc")
    assert reuse.status_code == 409 and reuse.json()["field"] == "client_id"
    # the retry after later clicks still answers the original body
    click(client, token, t1, client_id="ghi")
    assert click(client, token, t0, client_id="abc").json() == first.json()


def test_concurrent_duplicate_clicks_store_one(study):
    service, _, client, _ = study
    body = start(client)
    token, t0 = body["session_token"], body["trials"][0]["trial_id"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: click(client, token, t0, client_id="same"), range(16)))
    assert sorted(r.status_code for r in replies) == [200] * 15 + [201]
    assert len({json.dumps(r.json(), sort_keys=True) for r in replies}) == 1
    with service.read.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.clicks)).scalar_one() == 1


def test_concurrent_session_starts_never_double_assign(db_url, files):
    # Two services = two "workers" with their own engines on the same database.
    service, app, client, _ = make_study(db_url, files, trials_per_participant=5)
    other = StudyService(db_url, clock=service.clock)  # one clock, or one "worker" would expire the other's leases
    client2 = TestClient(make_app(other), raise_server_exceptions=False)
    pids = [f"P{i:04d}" for i in range(20)] + ["P0000", "P0001"] * 3  # some PIDs race with themselves
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda a: start(client if a[0] % 2 else client2, a[1]), enumerate(pids)))
    tokens = {}
    for pid, b in zip(pids, bodies):
        assert tokens.setdefault(pid, b["session_token"]) == b["session_token"], "a PID got two sessions"
    check_invariants(service)
    with service.read.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.sessions)).scalar_one() == 20
        assert conn.execute(select(func.count()).select_from(db.slots).where(
            db.slots.c.holder_session_id.is_not(None))).scalar_one() == 100
    assert app.state.internal_errors == 0
    other.close()
    service.close()


# ----------------------------------------------------------------------------- leases
def test_lease_expiry_releases_slots_and_keeps_clicks(db_url, files):
    # 10 pairs x 8 keypoints x 1 annotator = 80 slots; 5 trials per participant.
    service, app, client, clock = make_study(db_url, files, annotators_per_keypoint=1, lease_minutes=10)
    a = start(client, "PIDlate")
    token = a["session_token"]
    assert click(client, token, a["trials"][0]["trial_id"]).status_code == 201
    clock.t += 10 * 60 + 1
    late = click(client, token, a["trials"][1]["trial_id"])
    assert late.status_code == 410
    assert "expired" in late.json()["detail"] and late.json()["answered_count"] == 1
    assert client.get(f"/api/sessions/{token}").json()["status"] == "expired"
    # Fill the rest of the study with new participants: the 4 released slots are reused.
    n_sessions = 0
    while True:
        r = client.post("/api/sessions", json={"prolific_pid": f"N{n_sessions:03d}", "link_key": KEY})
        if r.status_code == 409:
            assert r.json()["reason"] == "study_full"
            break
        n_sessions += 1
        for t in r.json()["trials"]:
            assert click(client, r.json()["session_token"], t["trial_id"]).status_code == 201
    assert n_sessions == 16  # 79 free slots after the expiry: 15 sessions of 5 and one of 4
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["slots"] == {"filled": 80, "total": 80}
    assert prog["sessions"]["expired"] == 1 and prog["dropout_rate"] == pytest.approx(1 / 1)
    # the late participant's click is kept and exported
    clicks = read_clicks_text(client.get("/api/admin/clicks?format=csv", headers=AUTH).text)
    assert (clicks.participant == a["participant"]).sum() == 1
    # complete: 409 with missing trials (and still no code)
    r = client.post(f"/api/sessions/{token}/complete")
    assert r.status_code == 409 and r.json()["missing"] == 4
    check_invariants(service)
    assert app.state.internal_errors == 0
    service.close()


def read_clicks_text(text):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        fh.write(text)
    try:
        return read_clicks(fh.name)
    finally:
        os.unlink(fh.name)


# ----------------------------------------------------------------------------- assignment, 125 categories
def test_plan_125_categories_fills_evenly_with_minimum_sessions(db_url, tmp_path):
    files = make_study_files(tmp_path, n_categories=125, photos_per_category=1)
    # 125 pairs x 8 keypoints x 3 = 3000 slots = exactly 24 sessions of 125 trials
    init_study(db_url, files["pairs"], files["images"], StudyConfig(trials_per_participant=125), files["keypoints"])
    service = StudyService(db_url)
    key = service.config.link_key
    seen_counts = []
    for i in range(24):
        body, created = service.sessions.start(f"PID{i:03d}", "S", "X", key)
        assert created and body["total"] == 125
        cats = [t["category"] for t in body["trials"]]
        assert len(set(cats)) == 125  # exactly one pair per category
        with service.read.connect() as conn:
            held = conn.execute(select(db.tasks.c.category, db.tasks.c.id, func.count(db.slots.c.holder_session_id))
                                .select_from(db.tasks.join(db.slots)).group_by(db.tasks.c.category, db.tasks.c.id)).all()
        per_cat: dict = {}
        for cat, _, n in held:
            per_cat.setdefault(cat, []).append(n)
        # even filling: inside every category the tasks' holder counts differ by at most one
        assert all(max(v) - min(v) <= 1 for v in per_cat.values())
        seen_counts.append(sum(n for _, _, n in held))
    assert seen_counts == [125 * (i + 1) for i in range(24)]
    with pytest.raises(ConflictError) as exc:
        service.sessions.start("PID-late", "S", "X", key)
    assert exc.value.fields["reason"] == "study_full"
    check_invariants(service)
    service.close()


def test_constraints_live_in_the_database(study):
    """The invariants hold even for writes that bypass the service's Python checks."""
    service, _, client, _ = study
    a, b = start(client, "PIDa"), start(client, "PIDb")
    t = a["trials"][0]["trial_id"]
    assert click(client, a["session_token"], t).status_code == 201
    with service.read.connect() as conn:
        c = conn.execute(select(db.clicks)).first()
        sess_b = conn.execute(select(db.sessions.c.id).where(db.sessions.c.prolific_pid == "PIDb")).scalar_one()
        trial_b = conn.execute(select(db.trials.c.id).where(db.trials.c.session_id == sess_b)).scalars().first()
    base = {"trial_id": trial_b, "session_id": sess_b, "task_id": c.task_id, "client_id": "x", "x": 1.0, "y": 1.0,
            "rt_ms": 1.0, "created_at": 0.0, "excluded": False, "reply_json": "{}"}
    for bad in ({"slot_index": c.slot_index},                      # a second click in the same slot
                {"slot_index": service.config.annotators_per_keypoint},  # a 4th slot that does not exist
                {"slot_index": None, "session_id": c.session_id, "trial_id": trial_b}):  # same participant twice
        with pytest.raises(IntegrityError):
            with service.write.begin() as conn:
                conn.execute(insert(db.clicks).values(**{**base, **bad}))
    with pytest.raises(IntegrityError):
        with service.write.begin() as conn:
            conn.execute(insert(db.sessions).values(token="t" * 20, prolific_pid="PIDa", participant="x",
                                                    prolific_study_id="", prolific_session_id="", status="active",
                                                    flagged=False, catch_failed=0, n_trials=0, created_at=0,
                                                    expires_at=0))


# ----------------------------------------------------------------------------- catch trials
def test_catch_trial_failure_flags_and_reopens(db_url, files):
    catch = ItemSpec(photo=files["photo"][0], sketch=files["sketch"][0], keypoint=2, answer=[50.0, 60.0],
                     tolerance_px=10.0)
    service, app, client, _ = make_study(db_url, files, catch_per_session=1, catch_items=[catch])
    good, bad = start(client, "PIDgood"), start(client, "PIDbad")
    assert good["total"] == 6 and bad["total"] == 6
    for body, answer in ((good, (52.0, 61.0)), (bad, (200.0, 200.0))):
        for t in body["trials"]:
            x, y = answer if _is_catch(service, t["trial_id"]) else (100, 100)
            assert click(client, body["session_token"], t["trial_id"], x, y).status_code == 201
        assert client.post(f"/api/sessions/{body['session_token']}/complete").status_code == 200
    parts = {p["prolific_pid"]: p for p in client.get("/api/admin/participants", headers=AUTH).json()["participants"]}
    assert not parts["PIDgood"]["flagged"] and parts["PIDbad"]["flagged"] and parts["PIDbad"]["catch_failed"] == 1
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["slots"]["filled"] == 5 and prog["sessions"]["flagged"] == 1  # only the good session counts
    counted = read_clicks_text(client.get("/api/admin/clicks", headers=AUTH).text)
    assert set(counted.participant) == {good["participant"]} and len(counted) == 5
    everything = read_clicks_text(client.get("/api/admin/clicks?include=all", headers=AUTH).text)
    assert len(everything) == 12 and (everything.kind == "catch").sum() == 2 and everything.excluded.astype(int).sum() == 6
    check_invariants(service)
    assert app.state.internal_errors == 0
    service.close()


def _is_catch(service, trial_id):
    with service.read.connect() as conn:
        return conn.execute(select(db.trials.c.is_catch).where(db.trials.c.id == trial_id)).scalar_one()


# ----------------------------------------------------------------------------- admin
def test_every_admin_route_needs_the_token(study):
    _, app, client, _ = study
    start(client)
    admin_paths = [p for p in app.openapi()["paths"] if p.startswith("/api/admin")]
    assert len(admin_paths) >= 6
    for path in admin_paths:
        path = path.replace("{task_id}", "1").replace("{which}", "photo")
        app.state.admin_guard = AdminGuard(app.state.settings)  # a fresh failure count per path (throttle: tests/psc6k_web)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN},
                        {"Authorization": f"Basic {ADMIN}"}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code)
        assert client.get(path, headers=AUTH).status_code in (200, 404), path
    disabled = TestClient(make_app(app.state.service, admin_token=""), raise_server_exceptions=False)
    r = disabled.get("/api/admin/progress", headers=AUTH)
    assert r.status_code == 403 and r.json()["code"] == "forbidden" and "PSC6K_ADMIN_TOKEN" in r.json()["detail"]


def test_admin_views_and_exports(db_url, files):
    service, app, client, _ = make_study(db_url, files, trials_per_participant=5)
    rng = np.random.default_rng(0)
    sessions = []
    while True:
        r = client.post("/api/sessions", json={"prolific_pid": f"F{len(sessions):03d}", "link_key": KEY})
        if r.status_code == 409:
            break
        body = r.json()
        sessions.append(body)
        for t in body["trials"]:
            x, y = 100 + rng.normal(0, 2), 120 + rng.normal(0, 2)
            assert click(client, body["session_token"], t["trial_id"], float(x), float(y)).status_code == 201
    assert len(sessions) == 48  # 240 slots / 5
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["clicks_per_keypoint"] == {"0": 0, "1": 0, "2": 0, "3": 80}
    live = client.get("/api/admin/live", headers=AUTH).json()
    assert len(live["clicks"]) == 3 and live["centroid"] is not None
    assert client.get(live["photo_url"], headers=AUTH).status_code == 200
    assert client.get("/api/admin/live?task_id=99999", headers=AUTH).status_code == 404
    parts = client.get("/api/admin/participants", headers=AUTH).json()["participants"]
    assert len(parts) == 48 and all(p["mean_error_px"] is not None for p in parts)

    csv_text = client.get("/api/admin/clicks?format=csv", headers=AUTH).text
    clicks = read_clicks_text(csv_text)
    assert len(clicks) == 240 and list(clicks.columns[:8]) == [
        "participant", "photo", "sketch", "keypoint", "x", "y", "rt_ms", "created_at"]
    assert not set(clicks.participant) & {f"F{i:03d}" for i in range(48)}  # pseudonyms, not PIDs
    jsonl = [json.loads(line) for line in client.get("/api/admin/clicks?format=jsonl", headers=AUTH).text.splitlines()]
    assert len(jsonl) == 240 and jsonl[0]["display"] == {"width": 512, "dpr": 2, "blur": 0}

    # aggregated export == psc6k.aggregate on the exported raw clicks
    ref = aggregate_clicks(clicks)
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/admin/export?format=psc6k", headers=AUTH).content))
    assert set(z.namelist()) == {"test_pairs_ps.csv", "test_pairs_st.csv", "aggregate_report.json"}
    ps_path = files["images"].parent / f"export_{id(service)}.csv"
    ps_path.write_bytes(z.read("test_pairs_ps.csv"))
    ann = read_annotations(ps_path)
    assert len(ann) == 10
    expected = ref.photo_keypoints(ann.photo, ann.sketch)
    assert np.allclose(ann.photo_kps, expected)
    for i, s in enumerate(ann.sketch):
        assert np.allclose(ann.sketch_kps[i], files["sketch_kps"][s])
    report = json.loads(z.read("aggregate_report.json"))
    # the one report schema (psc6k aggregate writes the same keys), then the study's speed-floor summary
    assert tuple(report)[:len(REPORT_KEYS)] == REPORT_KEYS and "too_fast_participants" in report
    assert report["n_clicks"] == 240 and report["pairs_written"] == 10 == report["pairs_listed"]
    coco = client.get("/api/admin/export?format=coco", headers=AUTH).json()
    assert len(coco["annotations"]) == 10 and len(coco["annotations"][0]["keypoints"]) == 24
    assert client.get("/api/admin/export?format=ps", headers=AUTH).text.startswith("photo,sketch,class,XA")
    check_invariants(service)
    assert app.state.internal_errors == 0
    service.close()


def _strict_json(line: str):
    """json.loads as strict readers (jq, Node) parse: NaN / Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def test_too_fast_sessions_are_flagged_in_every_export_and_kept(db_url, files):
    """The server measures serving -> click itself; a bot with forged rt_ms is flagged on the
    dashboard and in every export; its clicks are kept; a person's pace is not flagged."""
    service, app, client, clock = make_study(db_url, files, trials_per_participant=5, min_median_response_ms=800)
    paces = {"BOT00001": 0.09 / 5, "PERSON01": 2.0, "EDGE0001": 0.8}  # seconds per trial; 0.8 s: exactly the floor
    for pid, pace in paces.items():
        body = start(client, pid)
        token = body["session_token"]
        for t in body["trials"]:
            client.get(t["photo_url"])
            clock.t += pace
            client.post(f"/api/sessions/{token}/clicks", json={  # forged rt_ms: a human-looking 2.3 s
                "trial_id": t["trial_id"], "x": 50.0, "y": 60.0, "rt_ms": 2300, "client_id": f"{pid}{t['trial_id']}"})
        assert client.post(f"/api/sessions/{token}/complete").status_code == 200  # flagged, not refused
    unseen = start(client, "NOLOOK01")  # clicks on trials whose images it never fetched: 0 ms each
    for t in unseen["trials"]:
        clock.t += 3
        click(client, unseen["session_token"], t["trial_id"])
    pseudonym = {p["prolific_pid"]: p["participant"]
                 for p in client.get("/api/admin/participants", headers=AUTH).json()["participants"]}
    fast = {pseudonym["BOT00001"], pseudonym["NOLOOK01"]}
    prog = client.get("/api/admin/progress", headers=AUTH).json()
    assert prog["sessions"]["too_fast"] == 2 and prog["sessions"]["flagged"] == 0
    parts = {p["prolific_pid"]: p for p in client.get("/api/admin/participants", headers=AUTH).json()["participants"]}
    assert parts["BOT00001"]["too_fast"] and parts["BOT00001"]["median_server_rt_ms"] == pytest.approx(18.0)
    assert parts["BOT00001"]["median_rt_ms"] == 2300.0  # what it claimed
    assert not parts["PERSON01"]["too_fast"] and parts["PERSON01"]["median_server_rt_ms"] == pytest.approx(2000.0)
    assert not parts["EDGE0001"]["too_fast"]  # at the floor is not under it
    assert parts["NOLOOK01"]["too_fast"] and parts["NOLOOK01"]["median_server_rt_ms"] == 0.0
    # every export: kept (20 counted clicks) and flagged
    clicks = read_clicks_text(client.get("/api/admin/clicks?format=csv", headers=AUTH).text)
    assert len(clicks) == 20 and set(clicks.loc[clicks.too_fast.astype(int) == 1, "participant"]) == fast
    person = clicks.loc[clicks.participant == pseudonym["PERSON01"], "server_rt_ms"]
    assert [float(v) for v in person] == [2000.0] * 5
    lines = [_strict_json(x) for x in client.get("/api/admin/clicks?format=jsonl&include=all", headers=AUTH).text.splitlines()]
    assert len(lines) == 20 and {r["participant"] for r in lines if r["too_fast"] == 1} == fast
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/admin/export?format=psc6k", headers=AUTH).content))
    report = _strict_json(z.read("aggregate_report.json").decode())
    assert report["too_fast_participants"] == sorted(fast) and report["too_fast_clicks"] == 10
    assert report["min_median_response_ms"] == 800 and report["n_clicks"] == 20
    coco = _strict_json(client.get("/api/admin/export?format=coco", headers=AUTH).text)
    assert coco["info"]["aggregation"]["too_fast_participants"] == sorted(fast)
    assert client.get("/admin").status_code == 200 and "too_fast" in client.get("/static/js/admin.js").text
    check_invariants(service)
    assert app.state.internal_errors == 0
    service.close()


def test_exports_are_strict_json(study):
    """A click without rt_ms (and a NaN the browser put in display) exports as null, never NaN."""
    service, app, client, _ = study
    body = start(client)
    token = body["session_token"]
    t0, t1 = body["trials"][0]["trial_id"], body["trials"][1]["trial_id"]
    assert client.post(f"/api/sessions/{token}/clicks", json={"trial_id": t0, "x": 1.0, "y": 2.0,
                                                               "client_id": "no-rt"}).status_code == 201
    raw = ('{"trial_id": %d, "x": 3.0, "y": 4.0, "rt_ms": 500, "client_id": "nan-display", "display": {"dpr": NaN}}'
           % t1)
    r = client.post(f"/api/sessions/{token}/clicks", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (201, 422), r.text
    for include in ("counted", "all"):
        text = client.get(f"/api/admin/clicks?format=jsonl&include={include}", headers=AUTH).text
        rows = [_strict_json(line) for line in text.splitlines()]
        assert rows[0]["rt_ms"] is None and "NaN" not in text and "Infinity" not in text
        if r.status_code == 201:
            assert rows[1]["display"] == {"dpr": None} and rows[1]["rt_ms"] == 500


def test_a_study_made_before_gets_the_new_columns(db_url, files):
    """Existing study databases: the tables and columns added since are added when opened."""
    service, _, _, _ = make_study(db_url, files)
    service.close()
    engine = db.make_engines(db_url)[0]
    with engine.begin() as conn:  # back to the schema of the previous version
        db.resume_refusals.drop(conn)
        conn.exec_driver_sql("ALTER TABLE sessions DROP COLUMN first_served_at")
        conn.exec_driver_sql("ALTER TABLE trials DROP COLUMN served_at")
    engine.dispose()
    clock = FakeClock()
    service = StudyService(db_url, clock=clock)
    try:
        with service.read.connect() as conn:
            assert not db.needs_upgrade(conn)
        client = TestClient(make_app(service), raise_server_exceptions=False)
        body = start(client)
        assert client.get(body["trials"][0]["photo_url"]).status_code == 200
        clock.t += 3
        assert click(client, body["session_token"], body["trials"][0]["trial_id"]).status_code == 201
        assert client.get("/api/admin/participants", headers=AUTH).json()["participants"][0]["too_fast"] is False
    finally:
        service.close()


# ----------------------------------------------------------------------------- bad input, paths
BAD_CLICKS = [
    {}, {"trial_id": "1", "x": 1, "y": 1, "client_id": "a"}, {"trial_id": 1.5, "x": 1, "y": 1, "client_id": "a"},
    {"trial_id": 1, "x": 256, "y": 1, "client_id": "a"}, {"trial_id": 1, "x": -1, "y": 1, "client_id": "a"},
{"trial_id": 1, "x": True, "y": 1, "client_id": "a"},
    {"trial_id": 1, "x": "3", "y": 1, "client_id": "a"}, {"trial_id": 1, "x": 1, "y": 1, "client_id": ""},
    {"trial_id": 1, "x": 1, "y": 1, "client_id": "a", "rt_ms": -5},
    {"trial_id": 1, "x": 1, "y": 1, "client_id": "a", "display": "not an object"},
    {"trial_id": 1, "x": 1, "y": 1, "client_id": "a", "display": {"k": "v" * 5000}},
    {"trial_id": 1, "x": 1, "y": 1, "client_id": "a" * 129}, {"trial_id": 0, "x": 1, "y": 1, "client_id": "a"},
    {"trial_id": 2**63, "x": 1, "y": 1, "client_id": "a"},  # would overflow a database INTEGER
    [1, 2, 3], "text", None,
]


def test_bad_input_is_4xx_naming_the_field_never_500(study):
    service, app, client, _ = study
    body = start(client)
    token = body["session_token"]
    for payload in BAD_CLICKS:
        r = client.post(f"/api/sessions/{token}/clicks", json=payload)
        assert r.status_code == 422, (payload, r.status_code, r.text)
        assert r.json()["detail"]
    for raw in (b'{"trial_id": 1, "x": NaN, "y": 1, "client_id": "a"}', b'{"trial_id": 1, "x": Infinity}',
                b'{"trial_id": ', b"\xff\xfe", b""):
        r = client.post(f"/api/sessions/{token}/clicks", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, raw
    r = client.post(f"/api/sessions/{token}/clicks", json={"trial_id": 1, "x": float(1e-3), "y": 1})
    assert r.status_code == 422 and "client_id" in r.json()["detail"]
    nan = client.post(f"/api/sessions/{token}/clicks", content=b'{"trial_id": 1, "x": NaN, "y": 1, "client_id": "a"}',
                      headers={"content-type": "application/json"})
    assert "x" in nan.json()["detail"]
    foreign = click(client, token, 10 ** 9)
    assert foreign.status_code == 404 and foreign.json()["field"] == "trial_id"
    for path in ("/api/sessions/nope/clicks", "/api/sessions/" + "a" * 40 + "/clicks"):
        assert client.post(path, json={"trial_id": 1, "x": 1, "y": 1, "client_id": "a"}).status_code == 404
    for pid in ("", "a" * 65, "bad pid", "../../x", 12):
        r = client.post("/api/sessions", json={"prolific_pid": pid, "link_key": KEY})
        assert r.status_code == 422 and "prolific_pid" in r.json()["detail"]
    big = client.post(f"/api/sessions/{token}/clicks", content=b"{" + b" " * 70000 + b"}",
                      headers={"content-type": "application/json"})
    assert big.status_code == 413

    def chunks():
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'
    chunked = client.post("/api/sessions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    for path in ("/api/admin/live?task_id=abc", "/api/admin/clicks?format=xml", "/api/admin/export?format=zip",
                 "/api/admin/export?n_sigma=nan", f"/api/admin/live?task_id={2**64}", f"/api/admin/images/{2**70}/photo",
                 f"/api/sessions/{token}/images/{2**40}/photo", f"/api/study/practice/{10**30}/photo"):
        assert client.get(path, headers=AUTH).status_code == 422, path
    assert app.state.internal_errors == 0


def test_images_only_for_own_trials_and_no_traversal(study):
    service, _, client, _ = study
    a, b = start(client, "PIDa"), start(client, "PIDb")
    ta = a["trials"][0]["trial_id"]
    assert client.get(f"/api/sessions/{a['session_token']}/images/{ta}/sketch").status_code == 200
    assert client.get(f"/api/sessions/{b['session_token']}/images/{ta}/sketch").status_code == 404
    for path in (f"/api/sessions/{a['session_token']}/images/{ta}/../../../../etc/passwd",
                 f"/api/sessions/{a['session_token']}/images/{ta}/..%2f..%2fstudy.db",
                 f"/api/sessions/{a['session_token']}/images/{ta}/%2e%2e",
                 f"/api/sessions/{a['session_token']}/images/..%2f1/photo",
                 "/api/study/practice/-1/photo", "/api/study/practice/99/photo", "/api/study/practice/0/..",
                 "/static/../db.py", "/static/%2e%2e/db.py", "/static/..%2fdb.py", "/api/admin/images/1/..%2f..%2fx"):
        r = client.get(path, headers=AUTH)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert b"import" not in r.content and b"SQLite" not in r.content


def test_init_refuses_paths_outside_the_root(db_url, tmp_path, files):
    bad = tmp_path / "pairs.csv"
    bad.write_text("photo,sketch\n../../etc/airplane/passwd.jpg,rendered_256x256/256x256/sketch/"
                   "tx_000100000000/airplane/n00000000_0-1.png\n")
    with pytest.raises(Psc6kError, match="relative"):
        init_study(db_url, bad, files["images"], StudyConfig(), files["keypoints"])
    with pytest.raises(Psc6kError, match="already holds a study"):
        init_study(db_url, files["pairs"], files["images"], StudyConfig(), files["keypoints"])
        init_study(db_url, files["pairs"], files["images"], StudyConfig(), files["keypoints"])
    cfg_path = tmp_path / "study.toml"
    cfg_path.write_text('titel = "typo"\n')
    with pytest.raises(Psc6kError, match="titel"):
        load_config(cfg_path)
