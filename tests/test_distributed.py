"""Jobs on several processes (`resources.processes`), with real processes throughout: the
trainer as 2 ranks under torchrun (`trainer.launch`, gloo on the CPU) against a single
process, stopped by SIGTERM and resumed, killed, failing; the validation that refuses what
ranks cannot train alike; and through the API on Postgres and Redis, with a worker that consumes
the CPU queue only."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import torch
from safetensors.torch import load_file

from tests.child import lines_until
from tests.stack import REDIS_URL, postgres_redis_stack
from tests.test_e2e import finished, wait_for
from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.launch import outcome
from trainer.spec import AdaptSpec, FinetuneSpec, PretrainSpec
from trainer.validation import check_spec

TINY_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}


def job(data: dict, **hyperparameters) -> dict:
    return {
        "kind": "finetune",
        "model": TINY_CNN,
        "data": {"train": data},
        "method": {"name": "supervised", "params": {}},
        "hyperparameters": {"seed": 3, **hyperparameters},
    }


# 49 training examples in one batch a step: the ranks' shares are 25 and 24.
ONE_STEP_EPOCHS = job({"dataset": "builtin:digits", "fraction": 0.037}, epochs=6, batch_size=64)
# 100 examples in batches of 33, 33, 33 and 1: shares of 17 and 16, then one rank on a stand-in.
SEVERAL_STEP_EPOCHS = job(
    {"dataset": "builtin:digits", "per_class": 10},
    epochs=12,
    batch_size=33,
    lr_schedule="cosine",
)


def start(
    run_dir: Path,
    spec: dict,
    processes: int,
    every: int | None = None,
    streams: dict[str, dict] | None = None,
) -> subprocess.Popen:
    """The trainer as the supervisor starts it (its own session), events on stdout; `streams`:
    the run request's streamed datasets (`trainer.streaming.DatasetStream`), by name."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "job_id": "job_test",
        "model_id": "model_test",
        "spec": spec | {"resources": spec.get("resources", {}) | {"processes": processes}},
        "streams": streams or {},
        "output_path": str(run_dir / "model.safetensors"),
    }
    if every is not None:
        run |= {"checkpoint_dir": str(run_dir / "checkpoints"), "checkpoint_every_steps": every}
    (run_dir / "run.json").write_text(json.dumps(run))
    trainer = ["-m", "trainer.main", str(run_dir)]
    launch = ["-m", "trainer.launch", "--nproc-per-node", str(processes)]
    return subprocess.Popen(
        [sys.executable, *(launch if processes > 1 else []), *trainer],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=open(run_dir / "stderr.log", "wb"),
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 180) -> list[dict]:
    output, _ = process.communicate(timeout=timeout)
    return [json.loads(line) for line in output.splitlines()]


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def metric_values(events: list[dict], name: str, split: str) -> list[float]:
    metrics = of_type(events, "metric")
    return [e["value"] for e in metrics if (e["name"], e["split"]) == (name, split)]


def metric_keys(events: list[dict]) -> list[tuple]:
    return [(e["name"], e["split"], e["step"], e["epoch"]) for e in of_type(events, "metric")]


def processes_running(path: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True)
    return found.stdout.split()


def test_two_ranks_take_the_steps_of_one_process(tmp_path):
    one = start(tmp_path / "one", ONE_STEP_EPOCHS, 1)
    two = start(tmp_path / "two", ONE_STEP_EPOCHS, 2)
    single, ranks = finish(one), finish(two)
    assert (one.returncode, two.returncode) == (0, 0), (tmp_path / "two" / "stderr.log").read_text()

    # One step an epoch: the train loss of each epoch is that step's loss.
    steps = metric_values(single, "loss", "train")
    assert len(steps) == 6 and steps[-1] < steps[0]
    assert torch.allclose(
        torch.tensor(metric_values(ranks, "loss", "train")), torch.tensor(steps), rtol=1e-5
    )
    for name in ("loss", "accuracy"):
        assert torch.allclose(
            torch.tensor(metric_values(ranks, name, "validation")),
            torch.tensor(metric_values(single, name, "validation")),
            rtol=1e-5,
        )
    # Rank 0's events only: the single process's, none twice.
    assert metric_keys(ranks) == metric_keys(single)
    assert [e["message"] for e in of_type(ranks, "log")] == [
        e["message"] for e in of_type(single, "log")
    ]
    progress = [e["step"] for e in of_type(ranks, "progress")]
    assert progress == sorted(progress) and progress[-1] == 6
    assert len(of_type(ranks, "result")) == 1 and not of_type(ranks, "error")
    # The model rank 0 wrote, once.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "model.safetensors",
        "run.json",
        "stderr.log",
    ]
    weights = load_file(tmp_path / "two" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "one" / "model.safetensors").items():
        assert torch.allclose(weights[name], tensor, atol=1e-5), name


def test_sigterm_stops_every_rank_at_one_checkpoint_and_the_run_resumes(tmp_path):
    uninterrupted = start(tmp_path / "uninterrupted", SEVERAL_STEP_EPOCHS, 2)
    single = start(tmp_path / "single", SEVERAL_STEP_EPOCHS, 1)
    run_dir = tmp_path / "stopped"
    first = start(run_dir, SEVERAL_STEP_EPOCHS, 2, every=5)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("step-*.pt")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # some steps past the checkpoint
    os.killpg(first.pid, signal.SIGTERM)  # as the supervisor stops a trainer
    events = finish(first, timeout=60)
    assert first.returncode == INTERRUPTED_EXIT, (run_dir / "stderr.log").read_text()
    assert not processes_running(run_dir), "a rank outlived its launcher"
    assert [e["message"] for e in of_type(events, "log")][-1].startswith("stopped at a checkpoint")
    saved = torch.load(max((run_dir / "checkpoints").glob("step-*.pt")), weights_only=True)
    assert 0 < saved["run"]["step"] < 12 * 4
    assert saved["torch_rng"].shape[0] == 2  # each rank's dropout stream
    assert not (run_dir / "model.safetensors").exists()

    second = start(run_dir, SEVERAL_STEP_EPOCHS, 2, every=5)
    events = finish(second)
    assert second.returncode == 0, (run_dir / "stderr.log").read_text()
    assert [e["step"] for e in of_type(events, "resumed")] == [saved["run"]["step"]]
    finish(uninterrupted), finish(single)
    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    resumed = load_file(run_dir / "model.safetensors")
    alone = load_file(tmp_path / "single" / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name
        # Several steps an epoch, unequal shares and a stand-in: still one process's steps.
        assert torch.allclose(alone[name], tensor, atol=1e-4), name


def test_a_killed_launcher_takes_its_ranks_with_it(tmp_path):
    process = start(tmp_path, job("builtin:digits", epochs=100), 2)
    lines_until(process.stdout, lambda line: json.loads(line)["type"] == "progress")  # they train
    assert len(processes_running(tmp_path)) == 3
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while processes_running(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_running(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_failure_on_every_rank_exits_1_with_one_error(tmp_path):
    spec = ONE_STEP_EPOCHS | {"resources": {"device": "cuda"}}
    process = start(tmp_path, spec, 2)
    events = finish(process)
    assert process.returncode == 1
    errors = of_type(events, "error")
    assert [e["error_type"] for e in errors] == ["device_unavailable"]


def test_the_launchers_exit_status_is_the_trainers():
    term, kill = -signal.SIGTERM, -signal.SIGKILL
    assert outcome([INTERRUPTED_EXIT, INTERRUPTED_EXIT]) == INTERRUPTED_EXIT
    # torchrun stops the ranks still running with SIGTERM once one has failed.
    assert outcome([INTERRUPTED_EXIT, term]) == INTERRUPTED_EXIT
    assert outcome([1, term]) == 1
    assert outcome([term, term]) == term
    # A rank killed (the OOM killer), its peer then failing: retryable, as a killed trainer is.
    assert outcome([kill, 1]) == kill


def test_validation_refuses_several_processes_where_ranks_would_train_differently():
    def issues(spec: dict) -> list[tuple[str, str]]:
        model = {"pretrain": PretrainSpec, "finetune": FinetuneSpec, "adapt": AdaptSpec}
        parsed = model[spec["kind"]].model_validate(spec | {"resources": {"processes": 2}})
        return [(issue.field, issue.message) for issue in check_spec(parsed)]

    text = {"architecture": "transformer", "params": {"max_length": 32}}
    digits = {"train": "builtin:digits"}
    refused = {
        "contrastive": {"kind": "pretrain", "model": TINY_CNN, "data": digits,
                        "method": {"name": "contrastive"}},
        "autoencoder": {"kind": "pretrain", "model": TINY_CNN, "data": digits,
                        "method": {"name": "autoencoder"}},
        "simcse": {"kind": "pretrain", "model": text, "data": {"train": "builtin:bbc-news"},
                   "method": {"name": "simcse"}},
        "coral": {"kind": "adapt", "model": TINY_CNN, "method": {"name": "coral"},
                  "data": {"source": "builtin:digits-rgb", "target": "builtin:digits-m"}},
        "resnet": job("builtin:digits") | {"model": {"architecture": "resnet"}},
        "batch_norm": job("builtin:digits")
        | {"model": {"architecture": "cnn", "params": {"batch_norm": True}}},
    }  # fmt: skip
    for what, spec in refused.items():
        found = issues(spec)
        assert [field for field, _ in found] == ["resources.processes"], (what, found)
        assert what in found[0][1] and "1 process only" in found[0][1]
    for method in ("mmd", "mcc", "self_training"):
        single = refused["coral"] | {"method": {"name": method}}
        assert [field for field, _ in issues(single)] == ["resources.processes"], method

    allowed = [
        job("builtin:digits"),
        {"kind": "pretrain", "model": text, "data": {"train": "builtin:bbc-news"},
         "method": {"name": "causal_lm"}},
        refused["coral"] | {"method": {"name": "dann"}},
        refused["coral"] | {"method": {"name": "source_only"}},
    ]  # fmt: skip
    for spec in allowed:
        assert issues(spec) == [], spec


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A worker that consumes the CPU queue only; `cuda` jobs go to a queue of their own."""
    gpu_queue = f"tunery-distributed-gpu-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("distributed")
    with postgres_redis_stack(root, "distributed", extra_env={"TUNERY_GPU_QUEUE": gpu_queue}) as s:
        yield s
    redis.Redis.from_url(REDIS_URL).delete(gpu_queue)


@pytest.mark.e2e
def test_a_two_process_job_succeeds_through_the_api_and_reports_its_metrics(stack):
    spec = job({"dataset": "builtin:digits", "per_class": 20}, epochs=3, batch_size=32)
    with stack.client() as client:
        response = client.post("/v1/jobs", json=spec | {"resources": {"processes": 2}})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        done = wait_for(client, job_id, finished, timeout=180)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["spec"]["resources"]["processes"] == 2
        assert done["progress"]["step"] == done["progress"]["total_steps"] == 3 * 7
        points = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
        epochs = [p["epoch"] for p in points if (p["name"], p["split"]) == ("loss", "train")]
        assert epochs == [1, 2, 3]
        tests = {p["name"]: p["value"] for p in points if p["split"] == "test"}
        metrics = done["metrics"]
        assert tests == {"accuracy": metrics["test_accuracy"],
                         "macro_f1": metrics["test_macro_f1"]}  # fmt: skip
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        statuses = [e["status"] for e in events if e["type"] == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
        assert [m["source_job_id"] for m in models].count(job_id) == 1


@pytest.mark.e2e
def test_the_api_refuses_several_processes_for_a_contrastive_pretrain(stack):
    spec = {"kind": "pretrain", "model": TINY_CNN, "data": {"train": "builtin:digits"},
            "method": {"name": "contrastive"}, "resources": {"processes": 2}}  # fmt: skip
    with stack.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["resources.processes"]


@pytest.mark.e2e
def test_a_cpu_worker_never_takes_a_gpu_job(stack):
    cpu_job = job({"dataset": "builtin:digits", "per_class": 10}, epochs=1)
    with stack.client() as client:
        gpu = client.post("/v1/jobs", json=cpu_job | {"resources": {"device": "cuda"}}).json()
        cpu = client.post("/v1/jobs", json=cpu_job).json()
        assert wait_for(client, cpu["id"], finished)["status"] == "succeeded", stack.logs()
        time.sleep(1.5)  # a reconcile or two more
        waiting = client.get(f"/v1/jobs/{gpu['id']}").json()
        assert (waiting["status"], waiting["attempt"]) == ("queued", 0)
        broker = redis.Redis.from_url(REDIS_URL)
        assert broker.llen(stack.env["TUNERY_GPU_QUEUE"]) >= 1  # sent, to the GPU queue
        assert client.post(f"/v1/jobs/{gpu['id']}/cancel").json()["status"] == "cancelled"


def test_sigusr1_to_the_launcher_ends_every_rank_at_one_step_and_keeps_the_model(tmp_path):
    """As a supervisor ends a pruned trial whose model is kept: SIGUSR1 to the launcher alone
    (`worker.trainer_process.finish`), forwarded to the ranks, which agree on the step."""
    process = start(tmp_path, job("builtin:digits", epochs=100), 2, every=1000)
    lines_until(process.stdout, lambda line: json.loads(line)["type"] == "progress")  # they train
    os.kill(process.pid, signal.SIGUSR1)
    events = finish(process, timeout=120)
    assert process.returncode == 0, (tmp_path / "stderr.log").read_text()
    assert not processes_running(tmp_path), "a rank outlived its launcher"
    logs = [e["message"] for e in of_type(events, "log")]
    assert any(m.startswith("asked to end training at step") for m in logs), logs
    (result,) = of_type(events, "result")
    assert "test_accuracy" in result["card"]["metrics"]
    assert (tmp_path / "model.safetensors").exists()
    epochs = [e["epoch"] for e in of_type(events, "metric") if e["name"] == "loss"]
    assert len(epochs) < 100  # ended long before its epochs
