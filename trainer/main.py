"""The trainer process: `python -m trainer.main RUN_DIR [--events-fd N]`.

RUN_DIR/run.json holds a `trainer.run_request.RunRequest`: the job spec, where to find the
base model and the uploaded datasets, and where to write the new model. The trainer writes the
model (safetensors, its card in the header) and reports events as JSON lines on the events
channel. Exit status: 0 success, 1 a deterministic failure (reported as an `error` event
first), 75 stopped at a checkpoint after SIGTERM, or a rank of another machine was lost (run
again to resume); death by a signal is the supervisor's to classify. SIGUSR1 (with a
checkpoint path; ignored without) ends training at the next step, and the run finishes as if
its epochs were done (test figures, the model saved, exit 0).

A job of several processes runs as one trainer per rank, started by `trainer.launch`
(torchrun) with `--events-path`: rank 0 reports every event and writes the model; the other
ranks report only an error of their own.
"""

import argparse
import ctypes
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.artifact import load_weights, save_model
from trainer.checkpoint import INTERRUPTED_EXIT, Checkpointing, Interrupted
from trainer.data import register_file
from trainer.events import EventSink
from trainer.methods import METHODS
from trainer.run import RunContext
from trainer.run_request import RunRequest
from trainer.streaming import register_stream
from trainer.training import TrainerError, resolve_device


def train(run_dir: Path, events: EventSink) -> None:
    run = RunRequest.model_validate_json((run_dir / "run.json").read_text())
    spec = run.spec
    base = load_weights(run.base_model_path) if run.base_model_path else None
    for name, upload in run.datasets.items():
        register_file(
            name, upload.path, upload.format, upload.labelled, upload.label_column, upload.task,
            upload.time_column,
        )  # fmt: skip
    for name, stream in run.streams.items():
        register_stream(name, stream)
    device = distributed.join(resolve_device(spec.resources.device, distributed.WORLD.local_size))
    method = METHODS[spec.method.name]
    checkpointing = None
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # no run to end early without checkpointing
    if run.checkpoint_dir:
        # Every rank checkpoints at the same steps, with collectives: the reporting rank's
        # interval, should another machine's worker be configured otherwise.
        every_steps = distributed.on_main(lambda: run.checkpoint_every_steps)
        checkpointing = Checkpointing(run.checkpoint_dir, every_steps, run.start_checkpoint_path)
        # SIGTERM (a cancel, a deadline, a worker shutting down) stops at the next step,
        # after a checkpoint.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: checkpointing.stop.set())
        # SIGUSR1 (a pruned trial whose model is kept) ends training at the next step.
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: checkpointing.finish.set())
    context = RunContext(spec, device, events, base, checkpointing)
    result = method.run(context)
    card = result.card.model_copy(
        update={
            "model_id": run.model_id,
            "job_id": run.job_id,
            "name": spec.name,
            "parent_model_id": getattr(spec, "base_model_id", None),
            "kind": spec.kind,
            "method": spec.method.name,
            "spec": spec.model_dump(mode="json"),  # as the job stores it
            "created_at": time.time(),
        }
    )
    if distributed.WORLD.main:
        save_model(result.model, card, run.output_path)
        events.emit("result", card=card.to_json())


class ErrorsOnly(EventSink):
    """The events channel of a rank other than 0: its own failure, nothing else."""

    def emit(self, type_: str, **fields: Any) -> None:
        if type_ == "error":  # short: a line under PIPE_BUF is written whole to the FIFO
            super().emit(type_, **(fields | {"message": fields["message"][:2000]}))


# mallopt(3) parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """glibc hands every freed block above its mmap threshold straight back to the kernel, so a
    step that frees and allocates the same large activations again pays page faults for them
    at every step: keep blocks up to 32 MiB in the heap, and trim it only past 64 MiB free.
    The seed CNN trains ~20% faster per CPU-second (docs/PERFORMANCE.md). Not glibc: no-op."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024**2)
    mallopt(_M_TRIM_THRESHOLD, 64 * 1024**2)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--events-fd", type=int, default=None)
    parser.add_argument("--events-path", type=Path, default=None, help="a FIFO, for ranks")
    args = parser.parse_args(argv)
    distributed.die_with_launcher()
    if args.events_path is not None:
        stream = open(args.events_path, "w")  # noqa: SIM115 - open until the process ends
    elif args.events_fd is not None:
        stream = os.fdopen(args.events_fd, "w")
    else:
        stream = sys.stdout
    events = EventSink(stream) if distributed.WORLD.main else ErrorsOnly(stream)
    try:
        code = _run(args.run_dir, events)
    finally:
        events.flush()  # metric points still batched, whatever the way out
    if distributed.WORLD.size > 1:
        # Decided: torchrun's SIGTERM to the ranks still running, once one has exited, must
        # not turn this exit status into a death by SIGTERM.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # And a rank leaves at once, without the interpreter's teardown: run at exit, C++
        # destructors met threads of the process group still running and aborted the rank
        # ("terminate called without an active exception", SIGABRT) in about one stop by
        # SIGTERM of six.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(run_dir: Path, events: EventSink) -> int:
    try:
        train(run_dir, events)
        distributed.leave()
    except Interrupted:
        distributed.leave()
        return INTERRUPTED_EXIT
    except TrainerError as error:
        events.emit("error", error_type=error.error_type, message=str(error))
        return 1
    except Exception as error:
        traceback.print_exc()
        if distributed.lost_a_peer(error):  # another machine's rank died: not this job's fault
            events.emit("error", error_type="peer_lost", message=f"{error}")
            return INTERRUPTED_EXIT
        events.emit(
            "error", error_type="training_error", message=f"{type(error).__name__}: {error}"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
