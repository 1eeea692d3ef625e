"""Alembic environment: migrates the database named by TUNERY_DATABASE_URL."""

from logging.config import fileConfig
from pathlib import Path

from alembic import context
from optuna.storages._rdb.models import BaseModel as OptunaModel

from app.config import get_settings
from app.db import make_engine
from app.models import Base

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

url = context.config.attributes.get("database_url") or get_settings().database_url
if url.startswith("sqlite:///"):
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

# Optuna's tables are created by a migration from Optuna's own models: compared with those.
OPTUNA_TABLES = frozenset(OptunaModel.metadata.tables)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return getattr(table, "name", name) not in OPTUNA_TABLES


engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
