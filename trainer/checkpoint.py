"""Checkpoints: everything a run needs to continue exactly where it stopped.

`trainer.loop.fit` saves one every `every_steps` steps and when asked to stop (SIGTERM),
holding the weights, optimiser, LR schedule, step, the position in the epoch, the
early-stopping state and the random generators; a resumed run then equals an uninterrupted
one (bitwise on CPU). Files are written under a temporary name, synced and renamed, and read
back with `weights_only=True`: they hold tensors and plain values only, and only files we wrote.

With several ranks (`trainer.distributed`) every rank calls `save` at the same step, rank 0
alone writes, and no rank returns before the file is complete: a rank that then exits (75,
stopped) never leaves a checkpoint half-written behind it. Every rank reads it on resume.
"""

import os
import threading
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
    path: Path
    every_steps: int
    stop: threading.Event = field(default_factory=threading.Event)  # checkpoint and exit 75
    # End training after this step and keep the model as it is (a pruned trial whose sweep
    # keeps its models): the run goes on to its test figures and saves it, exit 0.
    finish: threading.Event = field(default_factory=threading.Event)

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        # On the CPU: each rank moves what it loads onto its own device.
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        if distributed.WORLD.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            with open(partial, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, self.path)
        distributed.barrier()
