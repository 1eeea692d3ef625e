"""A byte-counting progress bar for uploads and downloads, on stderr so that it never mixes
with what a program prints on stdout (the CLI's `--json`, say)."""

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class TransferBar:
    def __init__(self, progress: Progress | None, description: str, total: int | None) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total) if progress else None

    def advance(self, count: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)

    def restart(self) -> None:
        """From zero again: a retried request sends the whole body again."""
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task)


@contextmanager
def transfer_bar(description: str, total: int | None, enabled: bool) -> Iterator[TransferBar]:
    if not enabled:
        yield TransferBar(None, description, total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield TransferBar(progress, description, total)
