"""Property-based fuzzing of the server against its own OpenAPI schema (schemathesis).

A bounded number of generated requests per operation (fast); the property is the one the issue
asks for: whatever arrives, the server never answers 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from evaluation.server import db
from evaluation.server.app import create_app
from evaluation.server.settings import ServerSettings
from psc6k.testing import make_annotations
from psc6k.formats import write_test_pairs_ps

ADMIN_TOKEN = "admin-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    write_test_pairs_ps(make_annotations(2, 1, 2), root / "test_pairs_ps.csv")
    app = create_app(ServerSettings(annotations=str(root / "test_pairs_ps.csv"),
                                    db_url=f"sqlite:///{root / 'lb.sqlite'}", admin_token=ADMIN_TOKEN,
                                    n_bootstrap=10, max_body_bytes=2 * 2**20, max_decompressed_bytes=8 * 2**20))
    with TestClient(app):  # runs the lifespan: the database stays open for the module's calls
        _, submitter = db.create_token(app.state.psc6k.engine, "fuzzer", daily_quota=100_000)
        yield app, submitter


@pytest.fixture(scope="module")
def api_schema(server):
    app, _ = server
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, server):
    _, submitter = server
    token = ADMIN_TOKEN if case.path.startswith("/admin") else submitter
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
