"""How a supervisor starts a trainer process, and stops it.

A fresh interpreter spends over two seconds importing torch, torch._dynamo and scikit-learn
before a job's first step (`bench/dispatch.py`: 3.35 s to the first step, 0.15 s forked). So a
single-process trainer is forked from a warm interpreter that has made those imports and
nothing else (`worker.zygote`, one per supervising process, started with it). The zygote never
trains, never reads a job and never initialises CUDA, so no job's data or state reaches the
next; the libraries' own threads (OpenBLAS's pool, pyarrow's jemalloc) are handled across the
fork by their fork handlers, as when torch's DataLoader forks its workers. A job of several
processes runs under torchrun (`trainer.launch`) from a fresh interpreter, as does every
job when `TUNERY_TRAINER_ZYGOTE=false`, or while the zygote is busy or cannot be started.

Either way the trainer leads a process group of its own (stopping it stops whatever it
started), dies with its parent (SIGKILL via PR_SET_PDEATHSIG; the zygote dies with its
supervisor) and is titled `python -m trainer.main RUN_DIR ...`, which is how a stopping
worker finds its trainers (`worker.shutdown`).
"""

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
IMPORTS_TIMEOUT_SECONDS = 120


class TrainerProcess(Protocol):
    """What a supervisor needs of a trainer, in `subprocess.Popen`'s terms."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def die_with_parent() -> None:
    """The kernel kills the calling process when its parent dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _become_a_trainer() -> None:
    """In a fresh trainer before exec: SIGTERM's default action (the pool process that starts it
    ignores SIGTERM, `worker.celery_app`, and an ignored signal stays ignored across exec), and
    death with its parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()


def trainer_title(argv: list[str]) -> str:
    return " ".join(["python", "-m", "trainer.main", *argv])


def start(
    run_dir: Path,
    events_fd: int,
    log_path: Path,
    processes: int,
    zygote: bool,
    rendezvous: Sequence[str] = (),
) -> TrainerProcess:
    """Start the trainer of `run_dir`, its events on `events_fd`, its output into `log_path`;
    `rendezvous`: `trainer.launch`'s arguments for one machine of several."""
    with open(log_path, "wb") as output:
        if processes == 1 and zygote and not rendezvous:
            forked = _ZYGOTE.fork([str(run_dir)], events_fd, output.fileno())
            if forked is not None:
                return forked
        trainer = ["-m", "trainer.main", str(run_dir), "--events-fd", str(events_fd)]
        if processes > 1 or rendezvous:  # torchrun, as `trainer.launch`: a rank per process
            launch = ["-m", "trainer.launch", "--nproc-per-node", str(processes), *rendezvous]
            trainer = [*launch, *trainer]
        return subprocess.Popen(
            [sys.executable, *trainer],
            pass_fds=[events_fd],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_become_a_trainer,
        )


def interrupt(process: TrainerProcess) -> None:
    """SIGTERM the trainer's process group: it stops at its next step, after a checkpoint."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(process.pid, signal.SIGTERM)


def stop(process: TrainerProcess, grace_seconds: float) -> None:
    """SIGTERM the trainer's process group, then SIGKILL it after the grace period."""
    if process.poll() is not None:
        return
    interrupt(process)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def finish(process: TrainerProcess) -> None:
    """Ask the trainer to end training at its next step and keep its model (SIGUSR1). To the
    trainer alone, or the launcher that forwards it to its ranks: not to its whole group,
    whose other processes (torch.compile's workers) have no handler for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGUSR1)


def warm_up() -> None:
    """Start this process's zygote now, so that its imports are done before the first job."""
    _ZYGOTE.ensure_running()


class _Forked:
    """A trainer forked by the zygote, which reports its exit status."""

    def __init__(self, pid: int, channel: socket.socket, done: threading.Lock) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._channel = channel
        self._done = done  # released once the exit status is in: the zygote is free

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(timeout=0)
        return None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            readable, _, _ = select.select([self._channel], [], [], timeout)
            if not readable:
                raise subprocess.TimeoutExpired(trainer_title([]), timeout or 0)
            try:
                answer = self._channel.recv(4096)
            except OSError:
                answer = b""
            finally:
                self._done.release()
            # No answer: the zygote died, and its child with it (PDEATHSIG).
            self.returncode = json.loads(answer)["returncode"] if answer else -signal.SIGKILL
        return self.returncode


class _Zygote:
    """This process's `worker.zygote`, started on first use and again if it dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._channel: socket.socket | None = None
        self._free = threading.Lock()  # one trainer at a time; others start fresh

    def ensure_running(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._discard()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "worker.zygote", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        self._channel = ours

    def fork(self, argv: list[str], events_fd: int, log_fd: int) -> _Forked | None:
        """A trainer forked with these arguments and descriptors; None when the zygote is busy
        with another or cannot take it."""
        if not self._free.acquire(blocking=False):
            return None
        try:
            pid = self._request(argv, events_fd, log_fd)
        except (OSError, ValueError, KeyError) as error:
            log.warning("no trainer zygote (%r): starting a fresh interpreter", error)
            self._discard()
            self._free.release()
            return None
        return _Forked(pid, self._channel, self._free)

    def _request(self, argv: list[str], events_fd: int, log_fd: int) -> int:
        """The pid of a trainer forked by the zygote, started first if it is not running."""
        request = json.dumps({"argv": argv}).encode()
        self.ensure_running()
        try:
            socket.send_fds(self._channel, [request], [events_fd, log_fd])
        except BrokenPipeError:  # it died since it was last seen alive: a new one takes it
            self._discard()
            self.ensure_running()
            socket.send_fds(self._channel, [request], [events_fd, log_fd])
        # The pid, once the zygote has made its imports (seconds; a minute on a machine
        # importing torch in every pool process at once).
        self._channel.settimeout(IMPORTS_TIMEOUT_SECONDS)
        answer = self._channel.recv(4096)
        self._channel.settimeout(None)
        return json.loads(answer)["pid"]

    def _discard(self) -> None:
        """Close the channel and end the zygote, whatever state it is in."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_ZYGOTE = _Zygote()
