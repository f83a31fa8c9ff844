"""The web layer both apps share (psc6k_web), held on both apps: the annotation app
(``psc6k annotate serve``) and the scoring server (``psc6k serve``), on SQLite and PostgreSQL
where a database is touched.

Attack rows of issue 20 covered here: a NUL in each free field on PostgreSQL (4xx, no traceback
in the log); X-Forwarded-For from 127.0.0.1 choosing the client's key; 60 wrong admin tokens;
bidi / zero-width / C1 method names; security headers on pages and API replies; HEAD on pages.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from annotation_app.app import create_app as create_annotation_app
from annotation_app.config import StudyConfig
from annotation_app.service import StudyService
from annotation_app.settings import AnnotationSettings
from annotation_app.study import init_study
from annotation_app.testing import make_study_files, postgres_test_url, reset_postgres
from evaluation.server import db as server_db
from evaluation.server.app import app_from_env
from evaluation.server.app import create_app as create_server_app
from evaluation.server.settings import ServerSettings
from psc6k import errors as E
from psc6k.formats import write_test_pairs_ps
from psc6k.submission import SubmissionTooLarge, save_submission
from psc6k.testing import make_annotations, make_keypoint_submission
from psc6k.text import check_text, forbidden_char
from psc6k_web.deps import ClientAddress
from psc6k_web.errors import install_error_handlers
from psc6k_web.headers import CSP, SecurityHeaders
from psc6k_web.settings import ADMIN_FAILURE_LIMIT
from psc6k_web.uploads import UploadGate, WorkSlots
from tests.helpers import run_async

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "web-layer-admin-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
KEY = "web-layer-link-key"
JSON = {"content-type": "application/json"}
#: Characters the one text rule refuses, one of each kind the issue names.
HOSTILE = {"NUL": "\x00", "C0": "\x1b", "DEL": "\x7f", "C1 NEL": "\x85", "C1 CSI": "\x9b", "RLO": "\u202e",
           "LRI": "\u2066", "ZWSP": "\u200b", "ZWJ": "\u200d", "BOM": "\ufeff", "SHY": "\u00ad",
           "LINE SEP": "\u2028"}
FINE = ("PSCNet (ResNet-18)", "Müller & Søn — 日本語 ✓", "a b", "emoji 🙂", "Ελληνικά")
FAILURES_ALLOWED = int(ADMIN_FAILURE_LIMIT.split("/")[0])


# ------------------------------------------------------------------------------ the two apps
@pytest.fixture(scope="module")
def study_files(tmp_path_factory):
    return make_study_files(tmp_path_factory.mktemp("web_study"), n_categories=2, photos_per_category=1)


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("web_gt")
    ann = make_annotations(2, 1, 2)
    write_test_pairs_ps(ann, root / "gt.csv")
    return ann, root / "gt.csv"


def _server_db_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'lb.sqlite'}"
    url = os.environ.get("PSC6K_TEST_POSTGRES_EVAL_URL") or os.environ.get("PSC6K_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but PSC6K_TEST_POSTGRES_EVAL_URL is not set")
        pytest.skip("PSC6K_TEST_POSTGRES_EVAL_URL not set")
    engine = server_db.make_engine(url)
    try:
        server_db.Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return url


def annotation_client(db_url, files, peer="127.0.0.1", **settings):
    init_study(db_url, files["pairs"], files["images"], StudyConfig(trials_per_participant=2, link_key=KEY),
               files["keypoints"])
    service = StudyService(db_url)
    options = {"admin_token": ADMIN_TOKEN, **settings}
    app = create_annotation_app(AnnotationSettings(db_url=db_url, **options), service=service)
    client = TestClient(app, raise_server_exceptions=False, client=(peer, 50000))
    client.closers = [service.close]
    return client


def server_client(db_url, csv, peer="127.0.0.1", **settings):
    options = {"admin_token": ADMIN_TOKEN, "n_bootstrap": 10, **settings}
    app = create_server_app(ServerSettings(annotations=str(csv), db_url=db_url, **options))
    client = TestClient(app, raise_server_exceptions=False, client=(peer, 50000))
    client.closers = []
    return client


@pytest.fixture(params=["annotation", "server"])
def which(request):
    return request.param


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kind(request):
    return request.param


@pytest.fixture
def make_client(which, kind, db_url_for, study_files, ground_truth):
    """``make_client(**settings)`` -> a started TestClient of the app under test."""
    opened = []

    def make(peer="127.0.0.1", **settings):
        if which == "annotation":
            client = annotation_client(db_url_for("annotation"), study_files, peer, **settings)
        else:
            client = server_client(db_url_for("server"), ground_truth[1], peer, **settings)
        client.__enter__()
        client.which = which
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
        for close in client.closers:
            close()
        assert client.app.state.internal_errors == 0, "a request reached the catch-all 500 handler"


def _annotation_db_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    url = postgres_test_url()
    if url is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but PSC6K_TEST_POSTGRES_URL is not set")
        pytest.skip("PSC6K_TEST_POSTGRES_URL not set")
    return reset_postgres(url)


@pytest.fixture
def db_url_for(kind, tmp_path):
    cache = {}

    def url(app: str) -> str:
        if app not in cache:
            cache[app] = (_server_db_url if app == "server" else _annotation_db_url)(kind, tmp_path)
        return cache[app]

    return url


ADMIN_PATH = {"annotation": "/api/admin/progress", "server": "/admin/tokens"}
PAGES = {"annotation": ["/", "/admin", "/static/js/participant.js", "/static/css/app.css"],
         "server": ["/leaderboard.html", "/static/leaderboard.js", "/static/leaderboard.css"]}
API = {"annotation": "/api/study", "server": "/leaderboard"}
HEALTH = {"annotation": "/api/health", "server": "/health"}


def _no_traceback(caplog) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"traceback logged: {record.getMessage()[:200]}"
        assert "Traceback" not in record.getMessage()
        assert len(record.getMessage()) < 1000, record.getMessage()[:200]


# ------------------------------------------------------------------------------ 7. the text rule
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_text_rule_refuses_each_kind(name):
    char = HOSTILE[name]
    assert forbidden_char(f"ab{char}c") == (2, f"U+{ord(char):04X}")
    with pytest.raises(E.Psc6kError, match=f"method: character U\\+{ord(char):04X} at position 2"):
        check_text(f"ab{char}c", "method")


def test_the_text_rule_keeps_every_script_and_symbol():
    for text in FINE:
        assert forbidden_char(text) is None and check_text(text, "method") == text
    assert forbidden_char("a\tb") == (1, "U+0009") and forbidden_char("a\tb", allow_tab=True) is None
    assert forbidden_char("x\ud800") == (1, "U+D800")


def _annotation_session(client) -> dict:
    r = client.post("/api/sessions", json={"prolific_pid": "PIDWEB1", "study_id": "S", "session_id": "X",
                                           "link_key": KEY})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("which", ["annotation"])
def test_nul_and_invisible_characters_in_every_annotation_field_are_422(make_client, which, caplog):
    """study_id, session_id, link_key, PROLIFIC_PID, client_id: 422 naming the field, nothing stored,
    no traceback in the log (on PostgreSQL a NUL used to be a 500 with a 15 KB traceback)."""
    client = make_client()
    caplog.set_level(logging.INFO)
    base = {"prolific_pid": "PIDWEB2", "study_id": "S", "session_id": "X", "link_key": KEY}
    for field in ("study_id", "session_id", "link_key", "prolific_pid"):
        for name, char in (("NUL", "\x00"), ("RLO", "\u202e"), ("ZWSP", "\u200b"), ("C1", "\x85")):
            r = client.post("/api/sessions", json={**base, field: f"a{char}b"})
            assert r.status_code == 422, (field, name, r.text)
            assert r.json()["code"] == "invalid_request" and r.json()["errors"][0]["field"] == field, r.text
    session = _annotation_session(client)
    trial = session["trials"][0]["trial_id"]
    for char in ("\x00", "\u202e", "\u200b", "\x9b"):
        r = client.post(f"/api/sessions/{session['session_token']}/clicks",
                        json={"trial_id": trial, "x": 1.0, "y": 2.0, "rt_ms": 900, "client_id": f"c{char}1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "client_id", r.text
    r = client.get(f"/api/sessions/abc%00defghij{'k' * 8}")
    assert r.status_code == 404
    _no_traceback(caplog)


def _submission_json(ann, tmp_path, method="ok") -> dict:
    path = save_submission(make_keypoint_submission(ann), tmp_path / "k.json")
    sub = json.loads(path.read_text())
    sub["method"] = method
    return sub


def _new_token(client, name="team") -> str:
    r = client.post("/admin/tokens", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.mark.parametrize("which", ["server"])
def test_nul_and_invisible_characters_in_every_server_field_are_422(make_client, which, ground_truth, tmp_path,
                                                                    caplog):
    """/submissions/{id}, PATCH /admin/entries/{id}, the method (query and inside the submission),
    encoder, description, token names: 422 naming the field, no traceback in the log."""
    client = make_client()
    caplog.set_level(logging.INFO)
    ann = ground_truth[0]
    for char in ("\x00", "\u202e"):
        quoted = "%00" if char == "\x00" else "%E2%80%AE"
        r = client.get(f"/submissions/ab{quoted}cd")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "entry_id", r.text
        r = client.patch(f"/admin/entries/ab{quoted}cd", json={"hidden": True}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "entry_id", r.text
        r = client.post("/admin/tokens", json={"name": f"team{char}"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name", r.text
    token = _new_token(client)
    good = json.dumps(_submission_json(ann, tmp_path)).encode()
    auth = {"authorization": f"Bearer {token}", **JSON}
    for field in ("method", "encoder", "description", "paper_url"):
        for name, char in HOSTILE.items():
            value = f"https://x.org/{char}" if field == "paper_url" else f"Net{char}Net"
            r = client.post("/submissions", params={field: value}, content=good, headers=auth)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, (field, name, r.text)
    for name, char in HOSTILE.items():  # the method named inside the submission itself
        body = json.dumps(_submission_json(ann, tmp_path, f"evil{char}teN")).encode()
        r = client.post("/score", content=body, headers=JSON)
        assert r.status_code == 422 and r.json()["detail"].startswith("method: character U+"), (name, r.text)
        assert client.post("/submissions", content=body, headers=auth).status_code == 422
    assert client.get("/me", headers={"authorization": f"Bearer {token}"}).json()["quota_left_today"] == 5
    board = client.get("/leaderboard").json()
    assert not [e for e in board["ranked"] + board["unranked"] if not e["reported_in_paper"]]
    r = client.post("/submissions", params={"method": "Müller-Net 日本"}, content=good, headers=auth)
    assert r.status_code == 200 and r.json()["ranked"], r.text
    _no_traceback(caplog)


def test_a_value_the_database_refuses_is_422_and_one_log_line(make_client, caplog):
    """The second guard: whatever still reaches the database and is refused there (sqlalchemy
    DataError: a NUL on PostgreSQL, an integer out of range) is a 422, logged as one line without
    the statement's parameters; a constraint is a 409."""
    from sqlalchemy import text
    from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

    client = make_client()
    app = client.app
    secret = "sessiontoken-SECRET-123"

    @app.get("/_probe/data_error")
    def _data_error():
        raise DataError("INSERT INTO t VALUES (%(x)s)", {"x": secret}, ValueError("text fields cannot contain NUL"))

    @app.get("/_probe/integrity")
    def _integrity():
        raise IntegrityError("INSERT INTO t VALUES (%(x)s)", {"x": secret}, ValueError("UNIQUE constraint failed"))

    engine = app.state.psc6k.engine if client.which == "server" else app.state.service.store.write

    @app.get("/_probe/real_nul")
    def _real_nul():
        with engine.connect() as conn:  # on PostgreSQL the driver refuses; SQLite stores it
            conn.execute(text("SELECT length(:x)"), {"x": f"{secret}\x00"})
        return {"ok": True}

    @app.get("/_probe/sql_bug")
    def _sql_bug():  # a database error no table entry covers: a bug, but its parameters stay out of the log
        raise ProgrammingError("SELECT %(x)s FROM nowhere", {"x": secret}, ValueError("no such table"))

    caplog.set_level(logging.INFO)
    r = client.get("/_probe/sql_bug")
    assert r.status_code == 500 and app.state.internal_errors == 1
    app.state.internal_errors = 0
    r = client.get("/_probe/data_error")
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    r = client.get("/_probe/integrity")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = client.get("/_probe/real_nul")
    assert r.status_code in (200, 422), r.text
    if engine.dialect.name == "postgresql":
        assert r.status_code == 422
    _no_traceback(caplog)
    assert not any(secret in rec.getMessage() for rec in caplog.records)
    assert any("database refused a value" in rec.getMessage() for rec in caplog.records)


# ------------------------------------------------------------------------------ 5. admin auth
def test_admin_auth_is_the_same_in_both_apps(make_client, caplog):
    client = make_client()
    path = ADMIN_PATH[client.which]
    caplog.set_level(logging.INFO, logger="psc6k.web.auth")
    for headers in ({}, {"authorization": "Bearer wrong-token"}, {"authorization": f"Basic {ADMIN_TOKEN}"},
                    {"authorization": "Bearer psc6k_not-the-admin"}):
        r = client.get(path, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers=ADMIN).status_code == 200
    logged = [rec.getMessage() for rec in caplog.records]
    assert len(logged) == 4 and all("127.0.0.1" in m and path in m for m in logged), logged
    assert not any("wrong-token" in m or ADMIN_TOKEN in m or "not-the-admin" in m for m in logged)


def test_admin_disabled_is_403_in_both_apps(make_client):
    client = make_client(admin_token="")
    r = client.get(ADMIN_PATH[client.which], headers=ADMIN)
    assert r.status_code == 403 and r.json()["code"] == "forbidden" and "PSC6K_ADMIN_TOKEN" in r.json()["detail"]


def test_sixty_wrong_admin_tokens_are_throttled_per_address(make_client, caplog):
    """After ``admin_failure_limit`` failures an address gets 429 + Retry-After for every admin
    request, the right token included; X-Forwarded-For does not escape it; another address is
    not affected."""
    client = make_client()
    path = ADMIN_PATH[client.which]
    caplog.set_level(logging.INFO, logger="psc6k.web.auth")
    codes = [client.get(path, headers={"authorization": f"Bearer guess-{i:03d}"}).status_code for i in range(60)]
    assert codes[:FAILURES_ALLOWED] == [401] * FAILURES_ALLOWED and set(codes[FAILURES_ALLOWED:]) == {429}, codes
    r = client.get(path, headers=ADMIN)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited" and 0 < int(r.headers["retry-after"]) <= 60
    r = client.get(path, headers={**ADMIN, "x-forwarded-for": "203.0.113.77"})
    assert r.status_code == 429
    assert len(caplog.records) == FAILURES_ALLOWED  # each failure logged once, none of the refused ones
    assert not any("guess-" in rec.getMessage() for rec in caplog.records)
    other = TestClient(client.app, raise_server_exceptions=False, client=("127.0.0.2", 50000))
    assert other.get(path, headers=ADMIN).status_code == 200


# ------------------------------------------------------------------------------ 8. client address
def _install_address_probe(app):
    @app.get("/_probe/address")
    def _address(client: ClientAddress):
        return {"client": client}


def test_x_forwarded_for_from_loopback_does_not_choose_the_key(make_client):
    client = make_client()
    _install_address_probe(client.app)
    for value in ("203.0.113.9", "203.0.113.9, 10.0.0.1", "garbage"):
        assert client.get("/_probe/address", headers={"x-forwarded-for": value}).json()["client"] == "127.0.0.1"


def test_a_trusted_proxy_passes_the_rightmost_untrusted_address(make_client):
    client = make_client(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    _install_address_probe(client.app)

    def seen(value):
        return client.get("/_probe/address", headers={"x-forwarded-for": value}).json()["client"]

    assert seen("6.6.6.6, 198.51.100.7") == "198.51.100.7"  # the client wrote 6.6.6.6 itself
    assert seen("6.6.6.6, 198.51.100.7, 10.1.2.3") == "198.51.100.7"  # a second trusted hop
    assert seen("not-an-address") == "127.0.0.1"
    untrusted = TestClient(client.app, raise_server_exceptions=False, client=("192.0.2.1", 5))
    assert untrusted.get("/_probe/address", headers={"x-forwarded-for": "6.6.6.6"}).json()["client"] == "192.0.2.1"


@pytest.mark.parametrize("which", ["annotation"])
def test_the_entry_rate_limit_ignores_x_forwarded_for_from_loopback(make_client, which):
    client = make_client(entry_rate_limit="3/minute")
    codes = [client.post("/api/sessions", json={"prolific_pid": f"PIDXFF{i}", "link_key": KEY},
                         headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code for i in range(6)]
    assert codes == [201] * 3 + [429] * 3


@pytest.mark.parametrize("which", ["server"])
def test_the_upload_bound_keys_on_the_address_not_the_header(make_client, which, ground_truth, tmp_path):
    """The per-client upload bound of the scoring server: one client at its bound cannot start
    another upload by claiming another address in X-Forwarded-For."""
    client = make_client(max_uploads_per_client=1)
    gate = client.app.state.psc6k.uploads
    body = json.dumps(_submission_json(ground_truth[0], tmp_path)).encode()
    with gate.uploading("127.0.0.1"):  # one upload of this client in progress
        r = client.post("/score", content=body, headers={**JSON, "x-forwarded-for": "203.0.113.5"})
        assert r.status_code == 429 and r.headers["retry-after"]
    assert client.post("/score", content=body, headers={**JSON, "x-forwarded-for": "203.0.113.5"}).status_code == 200


# ------------------------------------------------------------------------------ 6. headers, 10. HEAD
def _has_security_headers(r, no_store: bool) -> None:
    assert r.headers["x-content-type-options"] == "nosniff", r.url
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    if no_store:
        assert r.headers["cache-control"] == "no-store", r.url


def test_security_headers_on_pages_api_and_errors(make_client):
    client = make_client()
    for path in PAGES[client.which] + [HEALTH[client.which], API[client.which], "/no/such/page"]:
        r = client.get(path)
        _has_security_headers(r, no_store=False)
        if path in PAGES[client.which][:2]:
            assert r.headers["content-security-policy"] == CSP and "unsafe-inline" not in CSP
    r = client.get(ADMIN_PATH[client.which], headers=ADMIN)
    assert r.status_code == 200
    _has_security_headers(r, no_store=True)
    _has_security_headers(client.get(ADMIN_PATH[client.which]), no_store=True)  # the 401 too
    if client.which == "annotation":
        session = _annotation_session(client)
        _has_security_headers(client.get(f"/api/sessions/{session['session_token']}"), no_store=True)
        _has_security_headers(client.get("/api/admin/clicks", headers=ADMIN), no_store=True)
        _has_security_headers(client.get("/api/admin/participants", headers=ADMIN), no_store=True)
    else:
        r = client.get("/me", headers={"authorization": f"Bearer {_new_token(client)}"})
        _has_security_headers(r, no_store=True)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_head_as_get_sends_no_body():
    """The middleware itself drops the body (the test client and uvicorn drop it too)."""
    from psc6k_web.headers import HeadAsGet

    seen, sent = [], []

    async def app(scope, receive, send):
        seen.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"he", "more_body": True})
        await send({"type": "http.response.body", "body": b"llo"})

    async def send(message):
        sent.append(message)

    run_async(HeadAsGet(app)({"type": "http", "method": "HEAD", "path": "/"}, None, send))
    assert seen == ["GET"] and sent[0]["status"] == 200
    assert [m.get("body") for m in sent[1:]] == [b""] and not sent[-1]["more_body"]


def test_head_works_on_pages(make_client):
    client = make_client()
    for path in PAGES[client.which] + (["/"] if client.which == "server" else []) + [HEALTH[client.which],
                                                                                     API[client.which]]:
        get = client.get(path, follow_redirects=False)
        head = client.head(path, follow_redirects=False)
        assert head.status_code == get.status_code and head.status_code in (200, 307), (path, head.status_code)
        assert head.content == b"" and head.headers.get("content-type") == get.headers.get("content-type"), path
        assert head.headers.get("content-length") == get.headers.get("content-length"), path
        _has_security_headers(head, no_store=False)


# ------------------------------------------------------------------------------ 10. split mismatch
@pytest.mark.parametrize("private", [False, True])
def test_a_split_mismatch_is_the_documented_422_without_a_cli_hint(tmp_path, ground_truth, private):
    ann, csv = ground_truth
    sub = _submission_json(ann, tmp_path)
    options = {"private": True, "split_name": "hidden"} if private else {}
    with server_client(f"sqlite:///{tmp_path / 'lb.sqlite'}", csv, **options) as client:
        auth = {"authorization": f"Bearer {_new_token(client)}"} if private else {}
        missing = dict(sub, pairs=sub["pairs"][1:])
        stranger = dict(sub, pairs=sub["pairs"] + [dict(sub["pairs"][0], photo="other/photo.jpg")])
        for body, words in ((missing, "missing from the submission"), (stranger, "not in")):
            r = client.post("/score", content=json.dumps(body).encode(), headers={**JSON, **auth})
            assert r.status_code == 422 and r.json()["code"] == "invalid_submission", r.text
            assert r.json()["field"] == "pairs" and words in r.json()["detail"]
            assert "--" not in r.json()["detail"] and "allow" not in r.json()["detail"], r.json()["detail"]
            if private:  # no pair of the hidden split is named
                assert sub["pairs"][0]["photo"] not in r.json()["detail"]


# ------------------------------------------------------------------------------ 4. one error table
def test_one_too_large_class_maps_to_413():
    assert E.http_error(SubmissionTooLarge("over the limit")) == (413, "too_large")
    assert E.http_error(E.TooLargeError("x")) == (413, "too_large")
    assert issubclass(SubmissionTooLarge, E.SubmissionError)  # still a submission error for the CLI
    assert E.http_error(E.UnsupportedMediaTypeError("x")) == (415, "unsupported_media_type")
    assert E.http_error(E.RequestTimeoutError("x")) == (408, "timeout")
    assert E.http_error(E.BadRequestError("x")) == (400, "bad_request")


def _http_exception_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        if "HTTPException" in names:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_app_module_raises_or_imports_http_exception():
    """Apps raise psc6k.errors classes; the web layer's table (psc6k_web.errors) is the only
    place that knows HTTP statuses."""
    offenders = []
    for package in ("evaluation", "annotation_app"):
        for path in sorted((REPO / package).rglob("*.py")):
            offenders += _http_exception_uses(path)
    assert not offenders, offenders
    probe = REPO / "tests" / "psc6k_web" / "_probe_http_exception.py"
    try:  # the detector itself finds both forms
        probe.write_text("from fastapi import HTTPException\nimport starlette\nraise starlette.exceptions.HTTPException(1)\n")
        assert len(_http_exception_uses(probe)) == 2
    finally:
        probe.unlink()


# ------------------------------------------------------------------------------ 9. upload admission
def test_upload_gate_bounds_per_client_and_in_total():
    gate = UploadGate(per_client=2, total=3)
    with gate.uploading("a"), gate.uploading("a"):
        with pytest.raises(E.RateLimitedError) as per_client:
            with gate.uploading("a"):
                pass
        assert per_client.value.retry_after > 0
        with gate.uploading("b"):
            with pytest.raises(E.UnavailableError):
                with gate.uploading("c"):
                    pass
    assert gate.running == {}


def test_work_slots_refuse_past_running_plus_pending():
    slots = WorkSlots(concurrent=1, pending=1)
    slots.admit()
    slots.admit()
    with pytest.raises(E.UnavailableError) as busy:
        slots.admit()
    assert E.http_error(busy.value) == (503, "unavailable") and busy.value.retry_after > 0
    slots.release()
    slots.admit()


def test_the_scoring_service_imports_no_web_framework():
    for name in ("scoring.py",):
        source = (REPO / "evaluation" / "server" / name).read_text()
        assert not any(word in source for word in ("fastapi", "starlette", "HTTPException", "status_code"))


# ------------------------------------------------------------------------------ 1. settings, 2. lifespan
def test_server_settings_travel_to_workers_in_the_environment(monkeypatch, ground_truth, tmp_path):
    settings = ServerSettings(annotations=str(ground_truth[1]), db_url=f"sqlite:///{tmp_path / 'w.sqlite'}",
                              private=True, max_uploads=7, upload_timeout_s=12.5, trusted_proxies="10.0.0.0/8",
                              admin_token="from-the-cli")
    env = settings.to_env()
    assert env["PSC6K_SERVE_MAX_UPLOADS"] == "7" and env["PSC6K_ADMIN_TOKEN"] == "from-the-cli"
    for key in [k for k in os.environ if k.startswith("PSC6K_SERVE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ServerSettings() == settings
    app = app_from_env()
    assert app.state.settings == settings
    monkeypatch.setenv("PSC6K_SERVE_MAX_UPLOADS", "0")
    with pytest.raises(E.Psc6kError, match="max_uploads"):
        app_from_env()


def test_one_admin_token_variable_and_one_prefix_per_app(monkeypatch):
    monkeypatch.setenv("PSC6K_ADMIN_TOKEN", "shared-admin")
    monkeypatch.setenv("PSC6K_SERVE_ANNOTATIONS", "gt.csv")
    monkeypatch.setenv("PSC6K_ANNOT_DB", "sqlite:///s.db")
    monkeypatch.setenv("PSC6K_ANNOT_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")
    monkeypatch.setenv("PSC6K_SERVE_TRUSTED_PROXIES", "")
    server, annotation = ServerSettings(), AnnotationSettings()
    assert server.admin_token == annotation.admin_token == "shared-admin"
    assert annotation.trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16") and server.trusted_proxies == ()
    with pytest.raises(ValidationError, match="not an IP address"):
        AnnotationSettings(db_url="x", trusted_proxies="proxy.example.org")


def test_the_scoring_server_opens_its_database_in_the_lifespan(tmp_path, ground_truth):
    db_file = tmp_path / "lazy.sqlite"
    app = create_server_app(ServerSettings(annotations=str(ground_truth[1]), db_url=f"sqlite:///{db_file}"))
    assert not db_file.exists() and app.state.psc6k is None
    with TestClient(app) as client:
        assert db_file.exists() and client.get("/health").status_code == 200
    assert app.state.psc6k is None
    r = TestClient(app, raise_server_exceptions=False).get("/health")  # no lifespan: not open
    assert r.status_code == 503 and r.headers["retry-after"]


def test_both_serve_commands_refuse_a_trusted_proxy_that_is_no_address(tmp_path, capsys):
    from psc6k.cli import main

    assert main(["serve", "-a", "sample", "--trusted-proxies", "proxy.example.org", "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "--trusted-proxies" in capsys.readouterr().err
    assert main(["annotate", "serve", "--db", f"sqlite:///{tmp_path / 'y.db'}",
                 "--trusted-proxies", "10.0.0.0/33"]) == 2
    assert "--trusted-proxies" in capsys.readouterr().err


def test_a_real_uvicorn_does_not_let_x_forwarded_for_escape_the_admin_throttle(tmp_path, ground_truth):
    """Over TCP, with uvicorn run as the serve commands run it (``proxy_headers=False``): a
    loopback client rotating X-Forwarded-For is still one address for the admin throttle."""
    import httpx

    from evaluation.server.testdata import serve_in_thread

    app = create_server_app(ServerSettings(annotations=str(ground_truth[1]), db_url=f"sqlite:///{tmp_path / 'u.db'}",
                                           admin_token=ADMIN_TOKEN))
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        codes = [http.get("/admin/tokens", headers={"authorization": f"Bearer guess{i}",
                                                    "x-forwarded-for": f"203.0.113.{i}"}).status_code
                 for i in range(FAILURES_ALLOWED + 3)]
        assert codes == [401] * FAILURES_ALLOWED + [429] * 3, codes
        r = http.head("/leaderboard.html")
        assert r.status_code == 200 and r.content == b"" and r.headers["x-content-type-options"] == "nosniff"


def test_a_bug_reply_carries_the_security_headers():
    """Starlette answers an unhandled exception from its outermost middleware, outside
    SecurityHeaders: the 500 must carry the headers itself."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == CSP and r.headers["cache-control"] == "no-store"
