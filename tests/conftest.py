"""Shared fixtures. Tests run against the real services: Postgres and Redis on 127.0.0.1.

The environment is set here, before any test imports `app`, because settings are read once.
"""

import os
import tempfile
import uuid

import pytest

from tests.stack import create_postgres_database, drop_postgres_database, postgres_url

SESSION_TAG = uuid.uuid4().hex[:8]
API_DATABASE = f"tunery_api_{SESSION_TAG}"
os.environ.update(
    TUNERY_DATABASE_URL=postgres_url(API_DATABASE),
    TUNERY_BROKER_URL=os.environ.get("TUNERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    TUNERY_QUEUE=f"tunery-test-{SESSION_TAG}",
    TUNERY_SWEEP_INTERVAL_SECONDS="0",
    TUNERY_ARTIFACT_DIR=tempfile.mkdtemp(prefix="tunery-api-artifacts-"),
    TUNERY_CACHE_DIR=tempfile.mkdtemp(prefix="tunery-api-cache-"),
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
