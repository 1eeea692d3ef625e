"""Reading a child process's output with a deadline: a child that hangs without writing fails
the test that waits for it, with what it had written, instead of blocking the suite."""

import queue
import threading
from collections.abc import Callable
from typing import IO

READ_SECONDS = 120.0


def lines_until(
    stream: IO[str], done: Callable[[str], bool], timeout: float = READ_SECONDS
) -> list[str]:
    """Lines from `stream` up to and including the first for which `done` is true."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
            if done(line):
                return
        lines.put(None)  # end of output

    # A daemon: when the deadline passes it stays blocked on the pipe until the child exits.
    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; it wrote {seen[-5:]}") from None
        if line is None:
            raise AssertionError(f"the output ended first; it wrote {seen[-5:]}")
        seen.append(line)
        if done(line):
            return seen
