"""Trainers forked from the zygote behave as fresh interpreters do: same model, same events,
same exit statuses, the same title in `ps`, stopped by process group, dead with their parent."""

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

from tests.child import lines_until
from trainer.checkpoint import INTERRUPTED_EXIT
from worker import trainer_process
from worker.shutdown import trainers_under
from worker.trainer_process import _Zygote

SPEC = {
    "kind": "finetune",
    "model": {"architecture": "cnn", "params": {"channels": [4, 8], "hidden": 16}},
    "data": {"train": {"dataset": "builtin:digits", "fraction": 0.2}},
    "hyperparameters": {"epochs": 2, "batch_size": 32, "seed": 1},
}
LONG_SPEC = {**SPEC, "hyperparameters": {"epochs": 500, "batch_size": 8}}


def prepare(run_dir: Path, spec: dict, checkpoint: bool = False) -> Path:
    run_dir.mkdir(parents=True)
    run = {
        "job_id": "job_test",
        "model_id": "model_test",
        "spec": spec,
        "output_path": str(run_dir / "model.safetensors"),
    }
    if checkpoint:
        run |= {"checkpoint_dir": str(run_dir / "checkpoints"), "checkpoint_every_steps": 1000}
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def launch(zygote: _Zygote | None, run_dir: Path):
    """A trainer forked by `zygote`, or a fresh interpreter with None; its events' reader end."""
    read_fd, write_fd = os.pipe()
    if zygote is None:
        process = trainer_process.start(run_dir, write_fd, run_dir / "trainer.log", 1, False)
    else:
        with open(run_dir / "trainer.log", "wb") as log:
            process = zygote.fork([str(run_dir)], write_fd, log.fileno())
    os.close(write_fd)
    return process, os.fdopen(read_fd)


def event_types(events) -> list[str]:
    return [json.loads(line)["type"] for line in events]


def metrics(events) -> list[tuple]:
    """The metric points reported, without their times (progress events are paced by time)."""
    found = [json.loads(line) for line in events]
    return [(e["name"], e["split"], e["value"], e["step"]) for e in found if e["type"] == "metric"]


@pytest.fixture(scope="module")
def zygote():
    made = _Zygote()
    made.ensure_running()
    yield made
    made._channel.close()
    made._process.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not yet reaped


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_forked_trainer_trains_what_a_fresh_interpreter_trains(zygote, tmp_path):
    forked, forked_events = launch(zygote, prepare(tmp_path / "forked", SPEC))
    assert type(forked).__name__ == "_Forked"
    wait_until(lambda: b"trainer.main" in Path(f"/proc/{forked.pid}/cmdline").read_bytes())
    title = Path(f"/proc/{forked.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert f"python -m trainer.main {tmp_path / 'forked'}".encode() in title
    assert os.getpgid(forked.pid) == forked.pid  # a session of its own, stopped as a group
    fresh, fresh_events = launch(None, prepare(tmp_path / "fresh", SPEC))
    assert (forked.wait(timeout=300), fresh.wait(timeout=300)) == (0, 0)
    assert forked.returncode == forked.poll() == 0
    assert metrics(forked_events) == metrics(fresh_events) != []
    mine, theirs = (
        load_file(tmp_path / "forked" / "model.safetensors"),
        load_file(tmp_path / "fresh" / "model.safetensors"),
    )
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)


def test_exit_statuses_are_the_trainers(zygote, tmp_path):
    failing, events = launch(
        zygote, prepare(tmp_path / "bad", {**SPEC, "model": {"architecture": "nope"}})
    )
    assert failing.wait(timeout=120) == 1
    assert event_types(events)[-1] == "error"
    running, events = launch(zygote, prepare(tmp_path / "long", LONG_SPEC, checkpoint=True))
    # Until it trains, its SIGTERM handler set.
    lines_until(events, lambda line: json.loads(line)["type"] == "progress")
    trainer_process.stop(running, grace_seconds=60)  # SIGTERM: a checkpoint, then exit 75
    assert running.returncode == INTERRUPTED_EXIT
    killed, _ = launch(zygote, prepare(tmp_path / "killed", LONG_SPEC))
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL


def test_while_the_zygote_is_busy_the_next_trainer_is_a_fresh_interpreter(zygote, tmp_path):
    first, _ = launch(zygote, prepare(tmp_path / "first", LONG_SPEC))
    second, _ = launch(zygote, prepare(tmp_path / "second", SPEC))
    assert second is None  # the supervisor then starts a fresh interpreter
    trainer_process.stop(first, grace_seconds=0)
    third, _ = launch(zygote, prepare(tmp_path / "third", SPEC))
    assert third is not None and third.wait(timeout=300) == 0


def test_a_trainer_dies_with_its_zygote_and_a_new_zygote_takes_the_next(tmp_path):
    zygote = _Zygote()
    trainer, _ = launch(zygote, prepare(tmp_path / "orphan", LONG_SPEC))
    os.kill(zygote._process.pid, signal.SIGKILL)  # as when its supervisor is killed
    assert trainer.wait(timeout=30) == -signal.SIGKILL
    wait_until(lambda: not alive(trainer.pid), timeout=10)
    after, _ = launch(zygote, prepare(tmp_path / "after", SPEC))
    assert after is not None and after.wait(timeout=300) == 0
    zygote._channel.close()


def test_a_zygote_dies_with_its_supervisor(tmp_path):
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from worker import trainer_process; trainer_process.warm_up(); "
            "time.sleep(600)",
        ],
        start_new_session=True,
    )
    try:
        wait_until(lambda: _children_of(supervisor.pid), timeout=30)
        (zygote_pid,) = _children_of(supervisor.pid)
        supervisor.kill()
        supervisor.wait()
        wait_until(lambda: not alive(zygote_pid), timeout=10)
    finally:
        supervisor.kill()


def _children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def test_a_stopping_worker_finds_forked_trainers(zygote, tmp_path):
    forked, _ = launch(zygote, prepare(tmp_path / "found", LONG_SPEC))
    fresh, _ = launch(None, prepare(tmp_path / "fresh", LONG_SPEC))
    try:
        assert {forked.pid, fresh.pid} <= set(trainers_under(os.getpid()))
        assert zygote._process.pid not in trainers_under(os.getpid())
    finally:
        trainer_process.stop(forked, grace_seconds=0)
        trainer_process.stop(fresh, grace_seconds=0)
