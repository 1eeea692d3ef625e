"""A live stack for the SDK and CLI test modules: a real API server and Celery worker on a
fresh Postgres database and Redis (the production setup), dropped afterwards."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.stack import (
    Stack,
    create_postgres_database,
    drop_postgres_database,
    postgres_url,
    start_stack,
)


@contextmanager
def postgres_redis_stack(root: Path, name: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    database = f"tunery_{name}_{tag}"
    create_postgres_database(database)
    try:
        stack = start_stack(
            root, postgres_url(database), "redis://127.0.0.1:6379/0", f"tunery-{name}-{tag}"
        )
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        drop_postgres_database(database)
