"""Checkpoints in the trainer process: stopped by SIGTERM or killed by SIGKILL, a run resumed
from its checkpoint ends with exactly the weights of a run never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import INTERRUPTED_EXIT

SPEC = {
    "kind": "finetune",
    "model": {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}},
    "data": {"train": "builtin:digits"},
    "method": {"name": "supervised", "params": {}},
    # Dropout-free, but shuffling, a cosine schedule and early stopping all carry state.
    "hyperparameters": {"epochs": 6, "batch_size": 32, "lr_schedule": "cosine",
                        "early_stopping_patience": 10, "seed": 3},
}  # fmt: skip


def start(run_dir: Path, every: int | None, spec: dict = SPEC) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "job_id": "job_test",
        "model_id": "model_test",
        "spec": spec,
        "output_path": str(run_dir / "model.safetensors"),
    }
    if every is not None:
        run |= {"checkpoint_dir": str(run_dir / "checkpoints"), "checkpoint_every_steps": every}
    (run_dir / "run.json").write_text(json.dumps(run))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.main", str(run_dir)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert start(run_dir, None).wait(timeout=300) == 0
    return weights(run_dir)


def latest_checkpoint(run_dir: Path) -> Path | None:
    files = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    return files[-1] if files else None


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while latest_checkpoint(run_dir) is None:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


# Every 7 steps and at each epoch's end, or at each epoch's end alone: a run resumes from
# the middle of an epoch or from its end.
@pytest.mark.parametrize(
    ("stop", "every"), [(signal.SIGTERM, 7), (signal.SIGKILL, 7), (signal.SIGKILL, 10**6)]
)
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, uninterrupted, stop, every):
    run_dir = tmp_path / "run"
    first = start(run_dir, every)
    wait_for_checkpoint(run_dir, first)
    time.sleep(0.3)  # some steps past the checkpoint
    first.send_signal(stop)
    code = first.wait(timeout=60)
    assert code == (INTERRUPTED_EXIT if stop == signal.SIGTERM else -signal.SIGKILL)
    assert not (run_dir / "model.safetensors").exists()
    latest = latest_checkpoint(run_dir)
    saved_step = torch.load(latest, weights_only=True)["run"]["step"]
    assert 0 < saved_step < 6 * 40

    # A kill in the middle of writing the next checkpoint leaves only its temporary file.
    latest.with_name(latest.name + ".partial").write_bytes(b"a torn write")
    second = start(run_dir, every)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    events = [json.loads(line) for line in output.splitlines()]
    resumed = [e for e in events if e["type"] == "resumed"]
    assert [e["step"] for e in resumed] == [saved_step]
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[0] > saved_step  # onwards from the checkpoint
    resumed_weights = weights(run_dir)
    assert resumed_weights.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed_weights[name], tensor), name


def test_a_run_resumed_after_it_stopped_early_trains_no_more(tmp_path):
    """Its last checkpoint, at the epoch where early stopping ended training, says so: a run
    stopped after it (before its model was saved) ends with the same model, training none."""
    hp = {**SPEC["hyperparameters"], "epochs": 50, "early_stopping_patience": 1}
    spec = {**SPEC, "hyperparameters": hp}
    first = start(tmp_path, 10**6, spec)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0
    events = [json.loads(line) for line in output.splitlines()]
    epochs = max(e["epoch"] for e in events if e["type"] == "checkpoint")
    assert epochs < 50, "it did not stop early"
    stopped = weights(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    second = start(tmp_path, 10**6, spec)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    events = [json.loads(line) for line in output.splitlines()]
    assert not [
        e for e in events if e["type"] in ("checkpoint", "metric") and e.get("split") != "test"
    ]
    assert [e["type"] for e in events].count("resumed") == 1
    again = weights(tmp_path)
    for name, tensor in stopped.items():
        assert torch.equal(again[name], tensor), name
