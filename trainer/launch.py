"""The trainer as several data-parallel ranks under torchrun, with a single trainer's contract:

    python -m trainer.launch --nproc-per-node N -m trainer.main RUN_DIR [--events-fd W]

runs `torchrun --standalone --nproc-per-node N -m trainer.main RUN_DIR` (torch's own
launcher, `torch.distributed.run`, inside this process) and keeps what the supervisor relies on.
A job on several machines runs one launcher on each, every one given the same rendezvous
(torchrun's c10d rendezvous, its store hosted by the leader's launcher, `--leader`):

    python -m trainer.launch --nproc-per-node N --nnodes M --rdzv-endpoint HOST:PORT \
        --rdzv-id JOB-ATTEMPT --local-addr ADDRESS [--leader] [--max-restarts K] ...

`--nnodes MIN:MAX` with `--max-restarts K` is elastic: when a machine is lost, the others
start their ranks again (up to K times), with at least MIN machines, from the last checkpoint.
The leader's first rank reports and checkpoints, whichever number the rendezvous gives it.

- Events. torchrun's ranks inherit no file descriptors, so they write into a FIFO that this
  process relays onto fd W (stdout without one). Rank 0 writes every event; another rank only
  an error of its own. Of several errors only the first is relayed: the others follow from it
  (a peer gone).
- Signals. SIGTERM (a cancel, a deadline, a stopping worker) is forwarded to every rank, even
  one still starting; the ranks agree on the step to stop after, rank 0 checkpoints and all
  exit 75. (torchrun's own SIGTERM handling forwards it too, but then exits 1 whatever the
  ranks did.) SIGUSR1 (end training, keep the model) is forwarded the same way. A launcher
  killed outright takes its ranks with it: each dies with its parent.
- Exit status: 0 when every rank succeeded. When one failed: death by its signal if a rank was
  killed (retryable, as a killed trainer is), else 1 if one failed for good (its error event
  says why), else 75 when they stopped at a checkpoint.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from typing import BinaryIO

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous.api import RendezvousError

from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.distributed import LAUNCHER_PID, REPORTING_NODE

TRAINER = "trainer.main"
TORCHRUN_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"  # what torchrun handles itself: not SIGTERM
# How long the machines of a gang, all started, may take to meet at the rendezvous (the
# leader may still be fetching a large checkpoint from the artifact store).
JOIN_TIMEOUT_SECONDS = 600
# Once enough machines have met (an elastic group re-forming), how long more may still join.
LAST_CALL_SECONDS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--nnodes", default="1", help="machines: N, or MIN:MAX (elastic)")
    parser.add_argument("--rdzv-endpoint", help="HOST:PORT of the leader's rendezvous store")
    parser.add_argument("--rdzv-id", help="the same on every machine of one attempt")
    parser.add_argument("--local-addr", help="this machine's address, as the others reach it")
    parser.add_argument("--leader", action="store_true", help="host the rendezvous and report")
    parser.add_argument("--max-restarts", type=int, default=0)
    parser.add_argument("-m", dest="module", choices=[TRAINER], required=True)
    parser.add_argument("run_dir")
    parser.add_argument("--events-fd", type=int, default=None)
    args = parser.parse_args(argv)
    several_machines = args.nnodes != "1"
    if several_machines and not (args.rdzv_endpoint and args.rdzv_id and args.local_addr):
        parser.error("--nnodes other than 1 needs --rdzv-endpoint, --rdzv-id and --local-addr")
    out = os.fdopen(args.events_fd, "wb") if args.events_fd is not None else sys.stdout.buffer
    asked = {signal.SIGTERM: threading.Event(), signal.SIGUSR1: threading.Event()}
    for signum, event in asked.items():
        signal.signal(signum, lambda _signum, _frame, event=event: event.set())
    done = threading.Event()
    threading.Thread(target=_forward, args=(asked, done), daemon=True).start()
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the ranks' parent, for `distributed.join`
    os.environ[REPORTING_NODE] = "1" if args.leader or not several_machines else "0"
    # torchrun would give each rank one thread: share this machine's CPUs out instead.
    threads = max(1, len(os.sched_getaffinity(0)) // args.nproc_per_node)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    with tempfile.TemporaryDirectory(prefix="tunery-events-") as channel:
        fifo = os.path.join(channel, "events")
        relay = _Relay(fifo, out)
        try:
            code = _run(_torchrun_args(args, several_machines, fifo), fifo)
        finally:
            done.set()
            relay.finish()
    if code < 0:  # a rank was killed: so is the launcher, for the supervisor to see
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _torchrun_args(args: argparse.Namespace, several_machines: bool, fifo: str) -> list[str]:
    rendezvous = ["--standalone"]
    if several_machines:
        rendezvous = [
            f"--nnodes={args.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={args.rdzv_endpoint}",
            f"--rdzv-id={args.rdzv_id}",
            # Every machine of a test may be this one: who hosts the store is said, not guessed.
            f"--rdzv-conf=is_host={str(args.leader).lower()},join_timeout={JOIN_TIMEOUT_SECONDS},"
            f"read_timeout={JOIN_TIMEOUT_SECONDS},last_call_timeout={LAST_CALL_SECONDS}",
            f"--local-addr={args.local_addr}",
        ]
    return [
        *rendezvous,
        f"--nproc-per-node={args.nproc_per_node}",
        f"--max-restarts={args.max_restarts}",
        f"--signals-to-handle={TORCHRUN_SIGNALS}",
        "-m",
        TRAINER,
        args.run_dir,
        "--events-path",
        fifo,
    ]


def _run(torchrun_args: list[str], fifo: str) -> int:
    args = torchrun.parse_args(torchrun_args)
    try:
        torchrun.run(args)
    except ChildFailedError as failed:
        print(failed.format_msg(), file=sys.stderr)
        return outcome([failure.exitcode for failure in failed.failures.values()])
    except SignalException as signalled:  # SIGINT, SIGHUP, SIGQUIT: torchrun stopped the ranks
        return -int(signalled.sigval)
    except RendezvousError as failed:  # the machines did not meet, or could not meet again
        print(f"rendezvous failed: {failed!r}", file=sys.stderr)
        error = {"type": "error", "error_type": "rendezvous_failed", "message": str(failed)[:2000]}
        with open(fifo, "w") as events:  # relayed as the ranks' own: the supervisor retries
            events.write(json.dumps(error) + "\n")
        return INTERRUPTED_EXIT
    return 0


def outcome(exit_codes: list[int]) -> int:
    """The trainer's exit status, from those of the ranks that failed.

    Once a rank fails torchrun stops the others with SIGTERM (SIGKILL 30 s later), and counts
    them as failed too: a rank dead of SIGTERM is a consequence unless all are. A rank killed
    otherwise makes the attempt retryable, as a killed trainer is, even when another then
    failed for good (losing its peer is no reason to give the job up)."""
    causes = [code for code in exit_codes if code != -signal.SIGTERM] or exit_codes
    killed = [code for code in causes if code < 0]
    if killed:
        return killed[0]
    for code in (1, INTERRUPTED_EXIT):
        if code in causes:
            return code
    return max(causes)


class _Relay:
    """Copies the ranks' event lines from a FIFO onto `out`, the first error only."""

    def __init__(self, fifo: str, out: BinaryIO) -> None:
        os.mkfifo(fifo, 0o600)
        read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._keep_open = os.open(fifo, os.O_WRONLY)  # no end of file before `finish`
        os.set_blocking(read_end, True)
        self._thread = threading.Thread(
            target=self._copy, args=(os.fdopen(read_end, "rb"), out), daemon=True
        )
        self._thread.start()

    @staticmethod
    def _copy(lines: BinaryIO, out: BinaryIO) -> None:
        error_relayed = False
        for line in lines:
            try:
                is_error = json.loads(line).get("type") == "error"
            except (ValueError, AttributeError):
                is_error = False  # the supervisor ignores a malformed line
            if is_error and error_relayed:
                continue
            error_relayed |= is_error
            out.write(line)
            out.flush()

    def finish(self) -> None:
        """Once every rank has exited: relay what is left, then stop."""
        os.close(self._keep_open)
        self._thread.join(timeout=10)


def _forward(asked: dict[int, threading.Event], done: threading.Event) -> None:
    """Once asked to stop (SIGTERM) or to finish (SIGUSR1), pass the signal on to every rank,
    including one started after the request."""
    signalled: dict[int, set[int]] = {signum: set() for signum in asked}
    while not done.wait(0.2):
        for signum, event in asked.items():
            if event.is_set():
                for pid in _children(os.getpid()) - signalled[signum]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
                    signalled[signum].add(pid)


def _children(parent: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # The command name may hold spaces and parentheses: ppid follows the last ")".
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == parent:
                    found.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    return found


if __name__ == "__main__":
    sys.exit(main())
