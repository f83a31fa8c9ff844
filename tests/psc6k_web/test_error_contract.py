"""The ONE error contract (docs/errors.md) holds on both FastAPI apps: the same exception gets
the same status and the same JSON body ``{"detail", "code", ...fields}`` from the annotation app
and from the scoring server. Each case runs on both apps (``app`` is parametrised)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from psc6k import errors as E

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def annotation_app(tmp_path_factory):
    from annotation_app.app import create_app
    from annotation_app.config import StudyConfig
    from annotation_app.service import StudyService
    from annotation_app.settings import AnnotationSettings
    from annotation_app.study import init_study
    from annotation_app.testing import make_study_files

    root = tmp_path_factory.mktemp("contract_annot")
    files = make_study_files(root, n_categories=2, photos_per_category=1)
    url = f"sqlite:///{root}/s.db"
    init_study(url, files["pairs"], files["images"], StudyConfig(trials_per_participant=2), files["keypoints"])
    service = StudyService(url)
    yield create_app(AnnotationSettings(db_url=url, admin_token=""), service=service)
    service.close()


@pytest.fixture(scope="module")
def server_app(tmp_path_factory):
    from evaluation.server.app import create_app
    from evaluation.server.settings import ServerSettings
    from psc6k.testing import make_annotations
    from psc6k.formats import write_test_pairs_ps

    root = tmp_path_factory.mktemp("contract_server")
    write_test_pairs_ps(make_annotations(), root / "gt.csv")
    return create_app(ServerSettings(annotations=str(root / "gt.csv"), db_url=f"sqlite:///{root / 'lb.sqlite'}",
                                     admin_token=""))


class Echo(BaseModel):
    n: int


RAISED = {}  # name -> exception instance


def _install_probe_routes(app):
    if getattr(app.state, "probes", False):
        return
    app.state.probes = True

    @app.get("/_contract/raise/{name}")
    def _raise(name: str):
        raise RAISED[name]

    @app.post("/_contract/echo")
    def _echo(body: Echo):
        return {"n": body.n}


@pytest.fixture(params=["annotation", "server"])
def client(request, annotation_app, server_app):
    app = annotation_app if request.param == "annotation" else server_app
    _install_probe_routes(app)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app_under_test = app
        yield c


CASES = [
    (E.AuthenticationError("no token", field="authorization"), 401, "unauthorized", {"field": "authorization"}),
    (E.PermissionDeniedError("the admin API is disabled"), 403, "forbidden", {}),
    (E.NotFoundError("unknown session token", field="token"), 404, "not_found", {"field": "token"}),
    (E.ConflictError("the study is full", reason="study_full"), 409, "conflict", {"reason": "study_full"}),
    (E.GoneError("your reservation expired", answered_count=3, status="expired"), 410, "gone",
     {"answered_count": 3, "status": "expired"}),
    (E.TooLargeError("over 1 MB"), 413, "too_large", {}),
    (E.RateLimitedError("slow down", retry_after=7), 429, "rate_limited", {}),
    (E.UnavailableError("the database is down"), 503, "unavailable", {}),
    (E.SubmissionError("2 pairs missing", field="pairs"), 422, "invalid_submission", {"field": "pairs"}),
    (E.FormatError("bad header", file="x.csv", row=1), 422, "invalid_format", {"row": 1}),  # never the path
    (E.BadRequestError("bad Content-Length"), 400, "bad_request", {}),
    (E.RequestTimeoutError("the upload took too long"), 408, "timeout", {}),
    (E.UnsupportedMediaTypeError("send JSON"), 415, "unsupported_media_type", {}),
    (E.Psc6kError("n_sigma must be positive"), 422, "invalid_input", {}),
    (KeyError("a bug"), 500, "internal_error", {}),
]


@pytest.mark.parametrize("exc, status, code, fields", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_same_exception_same_reply_on_both_apps(client, exc, status, code, fields):
    name = type(exc).__name__
    RAISED[name] = exc
    before = client.app_under_test.state.internal_errors
    r = client.get(f"/_contract/raise/{name}")
    assert r.status_code == status, r.text
    body = r.json()
    expected_detail = "internal server error (logged)" if status == 500 else str(exc)
    assert body == {"detail": expected_detail, "code": code, **fields}
    assert (client.app_under_test.state.internal_errors - before) == (status == 500)
    if status == 429:
        assert r.headers["retry-after"] == "7"
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_table_covers_every_request_error_and_statuses_agree():
    request_errors = {c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.RequestError)}
    assert request_errors - {E.RequestError} <= set(E.HTTP_ERRORS)
    for status, code in E.HTTP_ERRORS.values():
        if status != 422:
            assert E.HTTP_STATUS_CODES[status] == code


def test_validation_errors_name_the_field(client):
    r = client.post("/_contract/echo", json={"n": "many"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_request" and body["detail"].startswith("invalid request: n: ")
    assert body["errors"] == [{"field": "n", "message": body["errors"][0]["message"]}]
    assert client.post("/_contract/echo", json={"n": 2}).json() == {"n": 2}


def test_framework_errors_follow_the_contract(client):
    r = client.get("/_contract/no-such-route")
    assert r.status_code == 404 and r.json()["code"] == "not_found" and r.json()["detail"]
    r = client.delete("/_contract/echo")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_small_bodies_are_capped_the_same_way(client):
    r = client.post("/_contract/echo", content=b'{"n": 1' + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "too_large" and "65536 bytes" in r.json()["detail"]

    def chunks():
        yield b'{"n": 1, "pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'
    r = client.post("/_contract/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = client.post("/_contract/echo", content=b'{"n": 1}', headers={"content-type": "application/json",
                                                                     "content-length": "lots"})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


def test_a_disabled_admin_api_is_403_on_both_apps(client):
    path = "/api/admin/progress" if client.app_under_test.title.startswith("PSC6K annotation") else "/admin/tokens"
    r = client.get(path, headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden" and "PSC6K_ADMIN_TOKEN" in r.json()["detail"]
