"""The trainer process: `python -m worker.core.trainer RUN_DIR [--events-fd N]`.

RUN_DIR/run.json holds the job spec, where to find the base model and the uploaded datasets,
and where to write the new model. The trainer writes the model (safetensors, its card in the
header) and reports events as JSON lines on the events channel. Exit status: 0 success, 1 a
deterministic failure (reported as an `error` event first), 75 stopped at a checkpoint after
SIGTERM (run again to resume); death by a signal is the supervisor's to classify.
"""

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from pydantic import TypeAdapter

from worker.core.artifact import CARD_FORMAT, load_weights, save_model
from worker.core.checkpoint import INTERRUPTED_EXIT, Checkpointing, Interrupted
from worker.core.data import register_file
from worker.core.events import EventSink
from worker.core.methods import METHODS
from worker.core.run import RunContext
from worker.core.spec import JobSpec
from worker.core.training import TrainerError, resolve_device


def train(run_dir: Path, events: EventSink) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    spec = TypeAdapter(JobSpec).validate_python(run["spec"])
    base = load_weights(Path(run["base_model_path"])) if run.get("base_model_path") else None
    for name, upload in run.get("datasets", {}).items():
        register_file(
            name, Path(upload["path"]), upload["format"], upload["labelled"], upload["label_column"]
        )
    device = resolve_device(spec.resources.device)
    method = METHODS[spec.method.name]
    checkpointing = None
    if run.get("checkpoint_path"):
        checkpointing = Checkpointing(Path(run["checkpoint_path"]), run["checkpoint_every_steps"])
        # SIGTERM (a cancel, a deadline, a worker shutting down) stops at the next step,
        # after a checkpoint.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: checkpointing.stop.set())
    context = RunContext(spec, device, events, base, checkpointing)
    result = method.run(context)
    card = {
        "format": CARD_FORMAT,
        "model_id": run["model_id"],
        "job_id": run["job_id"],
        "name": spec.name,
        "parent_model_id": getattr(spec, "base_model_id", None),
        "kind": spec.kind,
        "method": spec.method.name,
        "spec": run["spec"],
        **result.card,
        "created_at": time.time(),
    }
    save_model(result.model, card, Path(run["output_path"]))
    events.emit("result", card=card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--events-fd", type=int, default=None)
    args = parser.parse_args(argv)
    stream = os.fdopen(args.events_fd, "w") if args.events_fd is not None else sys.stdout
    events = EventSink(stream)
    try:
        train(args.run_dir, events)
    except Interrupted:
        return INTERRUPTED_EXIT
    except TrainerError as error:
        events.emit("error", error_type=error.error_type, message=str(error))
        return 1
    except Exception as error:
        traceback.print_exc()
        events.emit(
            "error", error_type="training_error", message=f"{type(error).__name__}: {error}"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
