"""A sweep survives the machine: in the middle of one sweep, kill -9 a trial's trainer, kill -9
the worker (and start another), restart Redis, restart Postgres, kill -9 the API server (and
start another). It still ends with exactly `max_trials` trials, each one job, one model per
completed trial, nothing left running or on disk, and the best trial its trials table shows."""

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.stack import postgres_redis_stack
from tests.test_chaos import EVERY, _restart, trainer_pids
from tests.test_core import DIGITS_CNN
from tests.test_e2e import gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TRIALS = 3
SWEEP = {
    "job": {**DIGITS_CNN, "hyperparameters": {"epochs": 4, "batch_size": 32}},
    "parameters": {
        "hyperparameters.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
    },
    "sampler": {"name": "random", "seed": 0},
    "max_trials": TRIALS,
    "max_parallel_trials": 1,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = {
        "TUNERY_CHECKPOINT_EVERY_STEPS": str(EVERY),
        "TUNERY_LEASE_SECONDS": "4",
        "TUNERY_REDISPATCH_AFTER_SECONDS": "3",
    }
    root = tmp_path_factory.mktemp("sweep-chaos")
    with postgres_redis_stack(root, "sweepchaos", extra_env=settings) as s:
        yield s


def read(stack, path: str, **params) -> dict:
    """GET through outages: the API, Redis or Postgres may be down for a few seconds."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with stack.client() as client:
                response = client.get(path, params=params)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"GET {path} kept failing:\n{stack.logs()}"
        time.sleep(0.5)


def a_trial_past_a_checkpoint(stack, sweep_id: str, after: int) -> dict:
    """The running trial job numbered `after` or later, once it has saved a checkpoint."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        jobs = read(stack, "/v1/jobs", limit=1000)["data"]
        for job in jobs:
            if (
                job["sweep_id"] == sweep_id
                and job["trial_number"] >= after
                and job["status"] == "running"
                and job["progress"]["step"] > 1.5 * EVERY
                and trainer_pids(job["id"])
            ):
                return job
        time.sleep(0.3)
    raise AssertionError(f"no trial of {sweep_id} ran past a checkpoint:\n{stack.logs()}")


def test_a_sweep_ends_whole_through_every_kind_of_fault(stack):
    with stack.client() as client:
        sweep_id = client.post("/v1/sweeps", json=SWEEP).json()["id"]

    job = a_trial_past_a_checkpoint(stack, sweep_id, 0)
    for pid in trainer_pids(job["id"]):
        os.kill(pid, signal.SIGKILL)

    job = a_trial_past_a_checkpoint(stack, sweep_id, job["trial_number"] + 1)
    worker = stack.processes[-1]
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its trainer, at once
    worker.wait()
    stack.start_worker()

    job = a_trial_past_a_checkpoint(stack, sweep_id, job["trial_number"] + 1)
    _restart("redis")
    _restart("postgres")
    stack.restart_api()

    deadline = time.monotonic() + 600
    while (sweep := read(stack, f"/v1/sweeps/{sweep_id}"))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, (sweep, stack.logs())
        time.sleep(1)
    assert sweep["status"] == "succeeded", (sweep, stack.logs())
    trials = read(stack, f"/v1/sweeps/{sweep_id}/trials")["data"]
    assert [t["number"] for t in trials] == list(range(TRIALS))
    assert [t["state"] for t in trials] == ["completed"] * TRIALS, trials
    jobs = [j for j in read(stack, "/v1/jobs", limit=1000)["data"] if j["sweep_id"] == sweep_id]
    assert sorted(j["trial_number"] for j in jobs) == list(range(TRIALS))  # one job a trial
    assert sorted(t["job_id"] for t in trials) == sorted(j["id"] for j in jobs)
    models = read(stack, "/v1/models", limit=1000)["data"]
    made_by = [m["source_job_id"] for m in models]
    assert all(made_by.count(j["id"]) == 1 for j in jobs)
    best = max(trials, key=lambda t: t["value"])
    assert (sweep["best_trial"]["number"], sweep["best_trial"]["value"]) == (
        best["number"],
        best["value"],
    )
    assert max(j["attempt"] for j in jobs) >= 2  # the kills cost attempts, not trials
    run_dir = Path(stack.env["TUNERY_RUN_DIR"])
    assert all(gone(run_dir / j["id"]) for j in jobs)
    assert not trainer_pids(str(run_dir))
