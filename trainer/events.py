"""The trainer's event channel: JSON lines that the supervisor relays into the database."""

import json
import select
import time
from typing import Any, TextIO


class EventSink:
    """Writes one JSON object per line; progress events are throttled to `progress_interval_s`.

    A metric point that follows another within `batch_interval_s` waits to be written with
    the next events: for at most `batch_interval_s` while training reports its steps, and never
    past the next event of another type. A trainer logging a point at every step would
    otherwise pay a write, and wake the supervisor, for each one (bench/ingest.py: 10 jobs at
    100 points/s each spent 7% more CPU per step, their supervisors twice the CPU). A point
    that follows anything else, such as the epoch's first, is written at once. Each write
    stays within PIPE_BUF bytes, so that it reaches a FIFO shared with other ranks whole.
    """

    def __init__(
        self, stream: TextIO, progress_interval_s: float = 0.5, batch_interval_s: float = 0.1
    ) -> None:
        self._stream = stream
        self._progress_interval_s = progress_interval_s
        self._last_progress = 0.0
        self._batch_interval_s = batch_interval_s
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._pending_since = 0.0  # when the first pending line was emitted
        self._last_metric: float | None = None  # when the previous event, if a metric, was

    def emit(self, type_: str, **fields: Any) -> None:
        line = json.dumps({"type": type_, "time": time.time(), **fields}) + "\n"
        now = time.monotonic()
        if self._pending_bytes + len(line) > select.PIPE_BUF:  # json.dumps writes ASCII
            self.flush()
        if not self._pending:
            self._pending_since = now
        self._pending.append(line)
        self._pending_bytes += len(line)
        follows_metric = (
            self._last_metric is not None and now - self._last_metric < self._batch_interval_s
        )
        self._last_metric = now if type_ == "metric" else None
        if not (type_ == "metric" and follows_metric) or self._batch_is_due(now):
            self.flush()

    def flush(self) -> None:
        """Write the pending events."""
        if self._pending:
            self._stream.write("".join(self._pending))
            self._stream.flush()
            self._pending.clear()
            self._pending_bytes = 0

    def _batch_is_due(self, now: float) -> bool:
        return bool(self._pending) and now - self._pending_since >= self._batch_interval_s

    def log(self, message: str) -> None:
        self.emit("log", message=message)

    def metric(self, name: str, split: str, value: float, step: int, epoch: int) -> None:
        self.emit("metric", name=name, split=split, value=value, step=step, epoch=epoch)

    def progress(self, step: int, epoch: int, total_steps: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= self._progress_interval_s:
            self._last_progress = now
            self.emit("progress", step=step, epoch=epoch, total_steps=total_steps)
        elif self._batch_is_due(now):
            self.flush()
