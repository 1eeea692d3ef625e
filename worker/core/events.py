"""The trainer's event channel: JSON lines that the supervisor relays into the database."""

import json
import time
from typing import Any, TextIO


class EventSink:
    """Writes one JSON object per line; progress events are throttled to `progress_interval_s`."""

    def __init__(self, stream: TextIO, progress_interval_s: float = 0.5) -> None:
        self._stream = stream
        self._progress_interval_s = progress_interval_s
        self._last_progress = 0.0

    def emit(self, type_: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"type": type_, "time": time.time(), **fields}) + "\n")
        self._stream.flush()

    def log(self, message: str) -> None:
        self.emit("log", message=message)

    def metric(self, name: str, split: str, value: float, step: int, epoch: int) -> None:
        self.emit("metric", name=name, split=split, value=value, step=step, epoch=epoch)

    def progress(self, step: int, epoch: int, total_steps: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= self._progress_interval_s:
            self._last_progress = now
            self.emit("progress", step=step, epoch=epoch, total_steps=total_steps)
