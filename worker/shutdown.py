"""A worker asked to stop (SIGTERM to its main process: a deploy, a scale-down) hands its jobs
back instead of waiting for them: every trainer it runs gets SIGTERM, saves a checkpoint and
exits 75, its supervisor re-queues the job as retryable, and the next attempt — on any
worker — resumes from the checkpoint. Celery's warm shutdown then finds the tasks done."""

import contextlib
import logging
import os
import signal
from pathlib import Path

from celery.signals import worker_init, worker_shutdown, worker_shutting_down

from app.config import get_settings

log = logging.getLogger(__name__)
# A trainer's command line, whether exec'd (arguments separated by NULs) or forked and titled
# (`worker.trainer_process`: one string). The zygote's, which imports the module, does not.
TRAINER_COMMAND = b" -m trainer.main "
ZYGOTE_COMMAND = b" -m worker.zygote "


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: the parent pid follows the last ")".
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    return children


def trainers_under(pid: int) -> list[int]:
    """The trainer processes among `pid`'s descendants: by their command, and every child of a
    zygote (`worker.trainer_process`), even one forked an instant ago and not yet titled."""
    children, found, stack = _children(), [], [pid]
    while stack:
        parent = stack.pop()
        for child in children.get(parent, []):
            stack.append(child)
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if TRAINER_COMMAND in command:
                found.append(child)
            elif ZYGOTE_COMMAND in command:
                found.extend(children.get(child, []))
                stack.remove(child)  # its children are found; no need to walk below
    return found


def stopping_mark(run_dir: Path, worker_pid: int) -> Path:
    """A file that says the worker of this main process is stopping: its pool processes then
    take no new job. Some brokers (the embedded one) still deliver to a stopping worker, and
    the job it has just handed back would come straight back to it."""
    return run_dir / f"worker-{worker_pid}-stopping"


@worker_shutting_down.connect
def hand_jobs_back(sig: str | None = None, how: str | None = None, **_: object) -> None:
    mark = stopping_mark(get_settings().run_dir, os.getpid())
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    for pid in trainers_under(os.getpid()):
        log.info("worker stopping (%s, %s): asking trainer %d to checkpoint", sig, how, pid)
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signal.SIGTERM)


@worker_init.connect
@worker_shutdown.connect
def _clear_stopping_mark(**_: object) -> None:
    """As the worker starts (a mark left by an earlier process with its pid) and as it ends."""
    stopping_mark(get_settings().run_dir, os.getpid()).unlink(missing_ok=True)
