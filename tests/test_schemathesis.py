"""Property-based requests generated from the OpenAPI document: no input, however odd, makes
the API answer with a server error."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.main import app

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _database(api_database):
    yield


@pytest.mark.filterwarnings("ignore:Skipped test cases with unsupported payload")
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
