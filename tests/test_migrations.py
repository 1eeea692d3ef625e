"""Alembic on a fresh Postgres database: upgrade to head, models match, downgrade to base."""

import uuid

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from tests.stack import create_postgres_database, drop_postgres_database, postgres_url


def test_upgrade_head_matches_the_models_and_downgrade_base_empties(tmp_path):
    name = f"tunery_migrations_{uuid.uuid4().hex[:8]}"
    create_postgres_database(name)
    try:
        config = Config("alembic.ini")
        config.attributes["database_url"] = postgres_url(name)
        command.upgrade(config, "head")
        engine = create_engine(postgres_url(name))
        tables = set(inspect(engine).get_table_names())
        assert {"jobs", "job_events", "job_metrics", "models", "alembic_version"} <= tables
        command.check(config)  # raises if the models and the migrations disagree
        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        engine.dispose()
    finally:
        drop_postgres_database(name)
