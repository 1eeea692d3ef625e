"""Shared fixtures. Tests run against real services: the run's own PostgreSQL and Redis
(`tests/servers.py`), or those named by TUNERY_TEST_DATABASE_URL and TUNERY_TEST_REDIS_URL.

The environment is set here, before any test imports `app`, because settings are read once.
"""

import os
import tempfile
import uuid
from dataclasses import dataclass

import pytest

from tests import servers

servers.start_unless_named()  # before tests.stack reads their addresses

from tests.stack import (  # noqa: E402
    REDIS_URL,
    create_postgres_database,
    drop_postgres_database,
    postgres_url,
)

SESSION_TAG = uuid.uuid4().hex[:8]
API_DATABASE = f"tunery_api_{SESSION_TAG}"
os.environ.update(
    TUNERY_DATABASE_URL=postgres_url(API_DATABASE),
    TUNERY_BROKER_URL=REDIS_URL,
    TUNERY_QUEUE=f"tunery-test-{SESSION_TAG}",
    TUNERY_RECONCILE_INTERVAL_SECONDS="0",
    TUNERY_WEBHOOK_POLL_SECONDS="0",  # in-process apps send no webhook (tests/test_webhooks.py)
    TUNERY_ARTIFACT_DIR=tempfile.mkdtemp(prefix="tunery-api-artifacts-"),
    TUNERY_CACHE_DIR=tempfile.mkdtemp(prefix="tunery-api-cache-"),
    TUNERY_AUTH_CACHE_SECONDS="0.5",
)


@pytest.fixture(scope="session")
def api_database() -> str:
    """A fresh, migrated Postgres database for the in-process API tests."""
    from alembic import command
    from alembic.config import Config

    create_postgres_database(API_DATABASE)
    command.upgrade(Config("alembic.ini"), "head")
    yield os.environ["TUNERY_DATABASE_URL"]
    from app.db import get_engine

    get_engine().dispose()
    drop_postgres_database(API_DATABASE)


@dataclass(frozen=True)
class Key:
    tenant_id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def new_tenant(read_only: bool = False, **quotas: int) -> Key:
    """A tenant of its own (a unique name) and an API key for it."""
    from app.db import session_scope
    from app.services import tenants

    with session_scope() as session:
        tenant = tenants.create_tenant(session, f"t-{uuid.uuid4().hex[:12]}", **quotas)
        _key, secret = tenants.create_key(session, tenant.name, read_only=read_only)
        return Key(tenant.id, secret)


@pytest.fixture(scope="session")
def api_key(api_database) -> Key:
    """The tenant the in-process API tests act as; its running-job quota is out of the way of
    state-machine tests that leave many jobs running."""
    return new_tenant(max_running_jobs=1_000_000)


@pytest.fixture
def configured(monkeypatch):
    """Settings from these variables for the test (they are read once, then cached)."""
    from app.config import get_settings

    def configure(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield configure
    monkeypatch.undo()
    get_settings.cache_clear()
