"""Checkpoints: everything a run needs to continue exactly where it stopped.

`trainer.loop.fit` saves one every `every_steps` steps and when asked to stop (SIGTERM),
holding the weights, optimiser, LR schedule, step, the position in the epoch, the
early-stopping state and the random generators; a resumed run then equals an uninterrupted
one (bitwise on CPU). Files are written under a temporary name, synced and renamed, and read
back with `weights_only=True`: they hold tensors and plain values only, and only files we wrote.

With several ranks (`trainer.distributed`) every rank calls `save` at the same step, rank 0
alone writes, and no rank returns before the file is complete: a rank that then exits (75,
stopped) never leaves a checkpoint half-written behind it. On resume every rank of one
machine reads it; across machines the reporting rank sends its bytes to the others, which
have no copy.
"""

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer import distributed

INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped at a checkpoint; run again to resume


class Interrupted(Exception):
    """The run was asked to stop and saved a checkpoint first."""


@dataclass
class Checkpointing:
    """A run's checkpoints: one file per save, `step-<step>.pt` in `directory`, the latest of
    which a resumed run starts from. Which others are kept is the supervisor's to decide (the
    job's retention policy); the trainer only ever reads the latest."""

    directory: Path
    every_steps: int
    # Another job's checkpoint whose weights a run starts from when it has none of its own.
    start_from: Path | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # checkpoint and exit 75
    # End training after this step and keep the model as it is (a pruned trial whose sweep
    # keeps its models): the run goes on to its test figures and saves it, exit 0.
    finish: threading.Event = field(default_factory=threading.Event)

    def latest(self) -> Path | None:
        files = sorted(self.directory.glob("step-*.pt")) if self.directory.is_dir() else []
        return files[-1] if files else None  # the step is zero-padded: names sort by step

    def load(self) -> dict[str, Any] | None:
        return _read_on_main(self.latest)

    def start_weights(self) -> dict[str, Any] | None:
        checkpoint = _read_on_main(lambda: self.start_from)
        return None if checkpoint is None else checkpoint["model"]

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Write the checkpoint of `step` whole (temporary name, sync, rename); its path."""
        path = self.directory / checkpoint_name(step)
        if distributed.WORLD.main:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            with open(partial, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        distributed.barrier()
        return path


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def _read_on_main(path: Callable[[], Path | None]) -> dict[str, Any] | None:
    """The checkpoint at the reporting rank's `path()`, on every rank: on one machine each
    rank reads the file; across machines the reporting rank sends its bytes to the others,
    which have no copy. On the CPU: each rank moves what it loads onto its own device."""
    if distributed.on_one_machine():
        found = path()
        return None if found is None else _read(found)
    data = distributed.on_main(lambda: None if (found := path()) is None else found.read_bytes())
    return None if data is None else _read(io.BytesIO(data))


def _read(file: Path | io.BytesIO) -> dict[str, Any]:
    return torch.load(file, map_location="cpu", weights_only=True)
