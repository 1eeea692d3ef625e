"""Alembic on a fresh Postgres database: upgrade to head, models match, downgrade to base."""

import uuid

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from tests.stack import create_postgres_database, drop_postgres_database, postgres_url


@pytest.fixture
def config():
    """Alembic's configuration for a fresh, empty Postgres database, dropped afterwards."""
    name = f"tunery_migrations_{uuid.uuid4().hex[:8]}"
    create_postgres_database(name)
    config = Config("alembic.ini")
    config.attributes["database_url"] = postgres_url(name)
    yield config
    drop_postgres_database(name)


def test_upgrade_head_matches_the_models_and_downgrade_base_empties(config):
    command.upgrade(config, "head")
    engine = create_engine(config.attributes["database_url"])
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "job_events", "job_metrics", "models", "alembic_version"} <= tables
    command.check(config)  # raises if the models and the migrations disagree
    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_rows_made_before_tenants_go_to_a_default_tenant(config):
    command.upgrade(config, "0004")
    engine = create_engine(config.attributes["database_url"])
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, status, spec, metrics, progress_step,"
                " progress_epoch, attempt, max_attempts, created_at)"
                " VALUES ('job_old', 'finetune', 'succeeded', '{}', '{}', 0, 0, 1, 3, now())"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        tenant = connection.execute(text("SELECT id, name FROM tenants")).one()
        owner = connection.execute(text("SELECT tenant_id FROM jobs")).scalar_one()
    assert tenant.name == "default" and owner == tenant.id
    engine.dispose()
