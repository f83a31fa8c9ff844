"""Study entry cannot be abused: the study link's key, the first-click window that frees the
slots of click-less sessions, and the optional per-client rate limit (behind a trusted proxy
header only when configured). SQLite and PostgreSQL, like test_annotation_service.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from annotation_app import db
from annotation_app.app import create_app
from annotation_app.config import StudyConfig
from annotation_app.service import StudyService, iso
from annotation_app.settings import AnnotationSettings
from annotation_app.study import init_study
from annotation_app.testing import FakeClock, check_invariants, make_study_files

KEY = "entry-link-key"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_study_files(tmp_path_factory.mktemp("entry"), n_categories=5, photos_per_category=2)


def open_study(db_url, files, client=("testclient", 50000), **settings):
    # 10 pairs x 8 keypoints x 1 annotator = 80 slots = 16 sessions of 5 trials
    config = StudyConfig(trials_per_participant=5, annotators_per_keypoint=1, lease_minutes=60,
                         first_click_minutes=10, link_key=KEY, practice_count=0)
    init_study(db_url, files["pairs"], files["images"], config, files["keypoints"])
    clock = FakeClock()
    service = StudyService(db_url, clock=clock)
    app = create_app(AnnotationSettings(db_url=db_url, admin_token="entry-admin-token", **settings), service=service)
    return service, TestClient(app, raise_server_exceptions=False, client=client), clock


def enter(client, pid, key=KEY, **headers):
    return client.post("/api/sessions", json={"prolific_pid": pid, "link_key": key}, headers=headers)


def test_no_session_without_the_link_key(db_url, files):
    service, client, _ = open_study(db_url, files)
    for key in (None, "", "entry-link-kez", KEY + "x"):
        r = enter(client, "PIDnokey", key)
        assert r.status_code == 403, (key, r.text)
        assert r.json()["code"] == "forbidden" and r.json()["field"] == "link_key"
    assert enter(client, "PIDnokey").status_code == 201
    assert enter(client, "PIDnokey", None).status_code == 403  # resuming needs it too
    link = client.get("/api/admin/study", headers={"Authorization": "Bearer entry-admin-token"}).json()
    assert link["link_key"] == KEY and link["study_url_path"].endswith(f"&key={KEY}")
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in link["study_url_path"]
    service.close()


def test_fifty_fake_ids_cannot_lock_out_a_real_participant(db_url, files):
    service, client, clock = open_study(db_url, files)
    early = enter(client, "REALearly").json()  # a real participant who is working: keeps the slots
    assert client.post(f"/api/sessions/{early['session_token']}/clicks", json={
        "trial_id": early["trials"][0]["trial_id"], "x": 1, "y": 1, "client_id": "c1"}).status_code == 201
    fakes = [enter(client, f"FAKE{i:03d}") for i in range(50)]
    assert sum(r.status_code == 201 for r in fakes) == 15  # 75 slots left / 5
    assert all(r.json()["reason"] == "study_full" for r in fakes if r.status_code != 201)
    assert enter(client, "REAL0001").status_code == 409  # locked out ... for now
    clock.t += 10 * 60 + 1  # the fakes made no click within first_click_minutes
    real = enter(client, "REAL0002")
    assert real.status_code == 201 and real.json()["total"] == 5
    for t in real.json()["trials"]:
        r = client.post(f"/api/sessions/{real.json()['session_token']}/clicks",
                        json={"trial_id": t["trial_id"], "x": 2, "y": 2, "client_id": f"r{t['trial_id']}"})
        assert r.status_code == 201
    assert client.post(f"/api/sessions/{real.json()['session_token']}/complete").status_code == 200
    # the early participant clicked: its lease (60 min) still holds its 4 unanswered slots
    resumed = enter(client, "REALearly").json()
    assert resumed["status"] == "active" and resumed["answered_count"] == 1
    assert client.post(f"/api/sessions/{resumed['session_token']}/clicks", json={
        "trial_id": resumed["trials"][1]["trial_id"], "x": 1, "y": 1, "client_id": "c2"}).status_code == 201
    # a fake that comes back after the window gets 410 on its stale plan, never a slot
    fake = fakes[0].json()
    late = client.post(f"/api/sessions/{fake['session_token']}/clicks", json={
        "trial_id": fake["trials"][0]["trial_id"], "x": 1, "y": 1, "client_id": "f1"})
    assert late.status_code == 410 and late.json()["code"] == "gone"
    check_invariants(service)
    assert client.app.state.internal_errors == 0
    service.close()


def test_rate_limit_per_client(db_url, files):
    service, client, _ = open_study(db_url, files, entry_rate_limit="5/minute")
    replies = [enter(client, f"FLOOD{i:03d}") for i in range(50)]
    assert [r.status_code for r in replies[:5]] == [201] * 5
    assert {r.status_code for r in replies[5:]} == {429}
    r = replies[-1]
    assert r.json()["code"] == "rate_limited" and 0 < int(r.headers["retry-after"]) <= 60
    # without a configured proxy header, a client cannot pose as others with X-Forwarded-For
    assert enter(client, "SPOOF001", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 429
    service.close()


def test_rate_limit_behind_a_trusted_proxy(db_url, files):
    service, client, _ = open_study(db_url, files, client=("127.0.0.1", 50000), entry_rate_limit="5/minute",
                                    trusted_proxies="127.0.0.1")
    # the proxy (127.0.0.1) appends the real address last; what the client wrote before it does not count
    flood = [enter(client, f"FLOOD{i:03d}", **{"X-Forwarded-For": f"10.0.0.{i}, 198.51.100.7"}) for i in range(20)]
    assert sum(r.status_code == 201 for r in flood) == 5
    real = enter(client, "REAL0001", **{"X-Forwarded-For": "192.0.2.44"})
    assert real.status_code == 201
    service.close()


def _release(client):
    """Lapsed sessions are released whenever progress is read (or a session starts)."""
    assert client.get("/api/admin/progress", headers={"Authorization": "Bearer entry-admin-token"}).status_code == 200


def test_first_click_window_starts_when_the_first_trial_is_served(db_url, files):
    service, client, clock = open_study(db_url, files)  # first_click_minutes = 10, lease 60
    t0 = clock.t
    reader = enter(client, "READER01").json()  # consent: the session and its plan exist
    token, trial = reader["session_token"], reader["trials"][0]
    clock.t += 9 * 60  # instructions and practice, read slowly
    assert client.get(trial["photo_url"]).status_code == 200  # the first real trial is shown
    assert client.get(trial["sketch_url"]).status_code == 200
    clock.t += 9 * 60  # 18 min after consent, 9 after the first trial
    _release(client)
    assert client.get(f"/api/sessions/{token}").json()["status"] == "active"
    r = client.post(f"/api/sessions/{token}/clicks", json={"trial_id": trial["trial_id"], "x": 5, "y": 5,
                                                            "client_id": "first"})
    assert r.status_code == 201, r.text
    with service.read.connect() as conn:
        served = conn.execute(select(db.sessions.c.first_served_at).where(db.sessions.c.token == token)).scalar_one()
    assert served == t0 + 9 * 60  # the first serving counts, not the later ones
    check_invariants(service)
    service.close()


def test_window_expiry_names_when_the_reservation_really_ended(db_url, files):
    service, client, clock = open_study(db_url, files)
    start = clock.t
    never = enter(client, "NOSERVE1").json()  # never shows a trial: the window runs from its start
    slow = enter(client, "SERVED01").json()
    clock.t += 2 * 60
    assert client.get(slow["trials"][0]["photo_url"]).status_code == 200  # shown, then never clicked
    clock.t += 11 * 60
    _release(client)
    for body, ended in ((never, start + 10 * 60), (slow, start + 12 * 60)):
        now = client.get(f"/api/sessions/{body['session_token']}").json()
        assert now["status"] == "expired" and now["lease_seconds_left"] == 0
        assert now["expires_at"] == iso(ended) and ended <= clock.t  # never a time in the future
        r = client.post(f"/api/sessions/{body['session_token']}/clicks",
                        json={"trial_id": body["trials"][0]["trial_id"], "x": 1, "y": 1, "client_id": "late"})
        assert r.status_code == 410 and f"expired at {iso(ended)}" in r.json()["detail"], r.text
    check_invariants(service)
    service.close()
