"""Sweeps with real processes, on Postgres and Redis and on the embedded SQLite: trials run as
jobs on a worker, the study learns each outcome, the best trial is named with its model and
its test figure, and a trial that falls behind is pruned mid-run, its trainer stopped, no
model kept."""

import time
import uuid
from pathlib import Path

import pytest

from tests.test_chaos import trainer_pids
from tests.test_core import DIGITS_CNN
from tests.test_e2e import a_stack, gone
from tests.test_observability import scrape
from tests.test_trainer_process import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["postgres-redis", "embedded"])
def stack(request, tmp_path_factory):
    """Optuna's storage on each of the service's databases: Postgres, and the SQLite that
    `make run` uses, where Optuna's connection and ours share one write lock."""
    tag = uuid.uuid4().hex[:8]
    with a_stack(request.param, tmp_path_factory.mktemp(request.param), tag) as stack:
        yield stack


def sweep_over(client, sweep_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] not in ("queued", "running"):
            return sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} stuck: {sweep}")


def trial_jobs(client, sweep_id: str) -> list[dict]:
    found = client.get("/v1/jobs", params={"limit": 1000}).json()["data"]
    return sorted(
        (job for job in found if job["sweep_id"] == sweep_id), key=lambda j: j["trial_number"]
    )


def test_a_sweep_runs_its_trials_on_the_workers_and_names_the_best(stack):
    body = {
        "name": "lr",
        "job": {**DIGITS_CNN, "hyperparameters": {"epochs": 2}},
        "parameters": {
            "hyperparameters.learning_rate": {
                "type": "float",
                "low": 1e-3,
                "high": 1e-2,
                "log": True,
            }
        },
        "sampler": {"name": "random", "seed": 0},
        "max_trials": 3,
        "max_parallel_trials": 2,
    }
    with stack.client() as api:
        created = api.post("/v1/sweeps", json=body)
        assert created.status_code == 201, created.text
        sweep = sweep_over(api, created.json()["id"])
        assert sweep["status"] == "succeeded", (sweep, stack.logs())
        assert sweep["trials"] == {"running": 0, "completed": 3, "pruned": 0, "failed": 0}
        trials = api.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
        jobs = trial_jobs(api, sweep["id"])
        assert [job["status"] for job in jobs] == ["succeeded"] * 3
        assert [t["job_id"] for t in trials] == [job["id"] for job in jobs]
        for trial, job in zip(trials, jobs, strict=True):
            assert trial["value"] == job["metrics"]["validation_accuracy"]
            assert sorted(trial["intermediate_values"]) == ["1", "2"]
        best = max(trials, key=lambda t: t["value"])
        named = sweep["best_trial"]
        assert (named["number"], named["value"]) == (best["number"], best["value"])
        best_job = jobs[best["number"]]
        assert named["model_id"] == best_job["result_model_id"] is not None
        assert named["test_metrics"]["accuracy"] == best_job["metrics"]["test_accuracy"]
        models = api.get("/v1/models", params={"limit": 1000}).json()["data"]
        assert sorted(m["source_job_id"] for m in models) == sorted(job["id"] for job in jobs)
        assert sweep["importances"] is not None and set(sweep["importances"]) == {
            "hyperparameters.learning_rate"
        }
        _, samples = scrape(api.get)
    assert samples[("tunery_sweeps", frozenset({("status", "succeeded")}))] == 1
    assert samples[("tunery_sweep_trials", frozenset({("state", "completed")}))] == 3
    assert samples[("tunery_sweep_trials", frozenset({("state", "pruned")}))] == 0
    durations = ("tunery_sweep_duration_seconds_count", frozenset({("status", "succeeded")}))
    assert samples[durations] == 1
    run_dir = Path(stack.env["TUNERY_RUN_DIR"])
    assert all(gone(run_dir / job["id"]) for job in jobs)


@pytest.mark.parametrize("keep", [False, True], ids=["no model", "model kept"])
def test_a_trial_that_falls_behind_is_pruned_keeping_its_model_only_if_asked(stack, keep):
    """One trial at a time over a grid of a useful learning rate and two that learn almost
    nothing, in that order (the grid sampler's seed 1 draws 3e-3, 2e-7, 1e-7); the median
    pruner, from the first epoch, stops both hopeless ones behind the completed first, each
    at its first epoch. With `keep_models`, each pruned trial's training ends there and its
    job ends `pruned` with the model and its test figures."""
    body = {
        "job": {**DIGITS_CNN, "hyperparameters": {"epochs": 4}},
        "parameters": {
            "hyperparameters.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-7, 2e-7]}
        },
        "sampler": {"name": "grid", "seed": 1},
        "pruner": {"name": "median", "startup_trials": 0, "warmup_epochs": 0, "keep_models": keep},
        "max_trials": 3,
        "max_parallel_trials": 1,
    }
    with stack.client() as api:
        sweep = sweep_over(api, api.post("/v1/sweeps", json=body).json()["id"])
        assert sweep["status"] == "succeeded", (sweep, stack.logs())
        trials = api.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
        jobs = trial_jobs(api, sweep["id"])
        assert [t["state"] for t in trials] == ["completed", "pruned", "pruned"], trials
        for trial, job in zip(trials, jobs, strict=True):
            if trial["state"] == "pruned":
                assert job["status"] == "pruned"
                assert list(trial["intermediate_values"]) == ["1"]  # judged at epoch 1
                # Stopped at once, not a heartbeat later: at most the epoch under way.
                points = api.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
                trained = [p for p in points if (p["name"], p["split"]) == ("loss", "train")]
                assert len(trained) <= 2, trained
                # Its supervisor stops it right after the prune; the sweep may end first.
                wait_until(lambda job=job: not trainer_pids(job["id"]), timeout=20)
                events = api.get(f"/v1/jobs/{job['id']}/events").json()["data"]
                assert events[-1]["status"] == "pruned", events
                if keep:
                    model = api.get(f"/v1/models/{job['result_model_id']}").json()
                    assert model["source_job_id"] == job["id"], model
                    assert model["metrics"]["test_accuracy"] == job["metrics"]["test_accuracy"]
                    assert events[-1]["message"].endswith(f"model {model['id']} kept"), events
                else:
                    assert job["result_model_id"] is None
        models = api.get("/v1/models", params={"limit": 1000}).json()["data"]
        from_sweep = [m for m in models if m["source_job_id"] in {job["id"] for job in jobs}]
        assert len(from_sweep) == (3 if keep else 1)
        assert sweep["best_trial"]["params"] == {"hyperparameters.learning_rate": 3e-3}
