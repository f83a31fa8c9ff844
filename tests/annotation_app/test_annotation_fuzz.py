"""Property-based fuzzing of the whole HTTP API from its OpenAPI schema (schemathesis): whatever
a client sends, the answer is never a 5xx (bad input is a 4xx naming the field)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from annotation_app.app import create_app  # noqa: E402
from annotation_app.service import StudyService  # noqa: E402
from annotation_app.settings import AnnotationSettings  # noqa: E402
from annotation_app.config import StudyConfig  # noqa: E402
from annotation_app.study import init_study  # noqa: E402
from annotation_app.testing import make_study_files  # noqa: E402

ADMIN = "fuzz-admin-token"


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    files = make_study_files(root, n_categories=3, photos_per_category=1)
    url = f"sqlite:///{root}/fuzz.db"
    init_study(url, files["pairs"], files["images"], StudyConfig(trials_per_participant=3), files["keypoints"])
    service = StudyService(url)
    yield create_app(AnnotationSettings(db_url=url, admin_token=ADMIN), service=service)
    service.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_never_a_server_error(case, fuzz_app):
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
    assert fuzz_app.state.internal_errors == 0
