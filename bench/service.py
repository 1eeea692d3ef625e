"""The tunery a benchmark talks to: one given by URL, or an embedded one started for the run."""

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def service(url: str | None, concurrency: int = 1) -> Iterator[str]:
    """The base URL of `url`, or of an embedded service (SQLite, kombu on SQLite) stopped on
    exit, whose worker runs `concurrency` jobs at once."""
    if url is not None:
        yield url
        return
    from tests.stack import start_stack

    root = Path(tempfile.mkdtemp(prefix="tunery-bench-"))
    stack = start_stack(
        root, f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db",
        queue=f"bench-{uuid.uuid4().hex[:8]}", concurrency=concurrency,
    )  # fmt: skip
    try:
        yield stack.base_url
    finally:
        stack.stop()
