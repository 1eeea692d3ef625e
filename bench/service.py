"""The tunery a benchmark talks to: one given by URL, or an embedded one started for the run."""

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx


@contextlib.contextmanager
def service(url: str | None, key: str | None, concurrency: int = 1) -> Iterator[httpx.Client]:
    """A client of the service at `url` (with API key `key`), or of an embedded service
    (SQLite, kombu on SQLite, a tenant of its own) stopped on exit, whose worker runs
    `concurrency` jobs at once."""
    if url is not None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            yield client
        return
    from tests.stack import start_stack

    root = Path(tempfile.mkdtemp(prefix="tunery-bench-"))
    stack = start_stack(
        root, f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db",
        queue=f"bench-{uuid.uuid4().hex[:8]}", concurrency=concurrency,
    )  # fmt: skip
    try:
        with stack.client() as client:
            client.timeout = httpx.Timeout(120)
            yield client
    finally:
        stack.stop()
