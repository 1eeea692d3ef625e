"""Checkpoints you can use, with real processes on Postgres and Redis: a job paused at a
checkpoint holds no worker and, resumed, ends with the weights of a job never paused; a
retention policy keeps the last and the best checkpoints, after the job too; a new job starts
from one of them."""

import time

import pytest
from safetensors.torch import load as load_safetensors

from tests.stack import postgres_redis_stack, trainer_pids
from tests.test_api import assert_problem
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for

pytestmark = pytest.mark.e2e

EVERY = 10  # checkpoint interval, in steps
# 40 steps an epoch: the job is paused a few checkpoints in.
JOB = {**DIGITS_CNN, "hyperparameters": {"epochs": 5, "batch_size": 32, "seed": 3}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = {"TUNERY_CHECKPOINT_EVERY_STEPS": str(EVERY), "TUNERY_LEASE_SECONDS": "4"}
    root = tmp_path_factory.mktemp("checkpoints")
    with postgres_redis_stack(root, "checkpoints", extra_env=settings) as s:
        yield s


def assert_refused(response, field: str) -> None:
    problem = assert_problem(response, 422)
    assert field in [error["field"] for error in problem["errors"]], problem


def succeeded(client, job_id: str) -> dict:
    job = wait_for(client, job_id, finished, timeout=300)
    assert job["status"] == "succeeded", job
    return job


def weights_of(client, job: dict) -> dict:
    download = client.get(f"/v1/models/{job['result_model_id']}/download")
    assert download.status_code == 200
    return load_safetensors(download.content)


def kept(client, job_id: str) -> list[dict]:
    page = client.get(f"/v1/jobs/{job_id}/checkpoints")
    assert page.status_code == 200, page.text
    return page.json()["data"]


def test_a_paused_job_holds_no_worker_and_resumed_ends_as_a_job_never_paused(stack):
    with stack.client() as client:
        # The job never paused runs first, alone: the same worker, the same threads.
        never_paused = succeeded(client, client.post("/v1/jobs", json=JOB).json()["id"])
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        seen = wait_for(client, job_id, lambda j: j["progress"]["step"] > 2 * EVERY or finished(j))
        assert seen["status"] == "running", seen
        asked = client.post(f"/v1/jobs/{job_id}/pause")
        assert asked.status_code == 200, asked.text
        assert asked.json()["pause_requested"] or asked.json()["status"] == "paused"
        job = wait_for(client, job_id, lambda j: j["status"] != "running", timeout=60)
        assert job["status"] == "paused", (job, stack.logs())
        assert not trainer_pids(job_id), "a paused job's trainer is still running"
        [checkpoint] = kept(client, job_id)  # the default policy keeps what resume needs
        assert checkpoint["step"] >= seen["progress"]["step"]
        assert checkpoint["size_bytes"] > 0
        time.sleep(3)  # the reconciler sends queued jobs, never a paused one
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "paused"
        assert client.post(f"/v1/jobs/{job_id}/pause").json()["status"] == "paused"  # as it is

        assert client.post(f"/v1/jobs/{job_id}/resume").json()["status"] == "queued"
        job = succeeded(client, job_id)
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        resumed = [e for e in events if e["message"].startswith("resumed from the checkpoint")]
        assert len(resumed) == 1, events
        assert resumed[0]["message"].startswith(
            f"resumed from the checkpoint at step {checkpoint['step']} "
        ), resumed
        assert [e["status"] for e in events if e["status"]].count("paused") == 1
        ours, theirs = weights_of(client, job), weights_of(client, never_paused)
        assert ours.keys() == theirs.keys()
        for name, tensor in theirs.items():
            assert (ours[name] == tensor).all(), name

        assert_problem(client.post(f"/v1/jobs/{job_id}/pause"), 409)
        assert_problem(client.post(f"/v1/jobs/{job_id}/resume"), 409)


def test_the_policy_keeps_the_last_and_the_best_and_a_new_job_starts_from_one(stack):
    retention = {"keep_last": 1, "keep_best": 2, "metric": "loss"}
    spec = {**JOB, "hyperparameters": {"epochs": 4, "seed": 5}, "checkpoints": retention}
    with stack.client() as client:
        job = succeeded(client, client.post("/v1/jobs", json=spec).json()["id"])
        points = client.get(f"/v1/jobs/{job['id']}/metrics", params={"limit": 1000}).json()
        loss_of = {
            p["epoch"]: p["value"]
            for p in points["data"]
            if p["name"] == "loss" and p["split"] == "validation"
        }
        assert sorted(loss_of) == [1, 2, 3, 4]
        best = sorted(loss_of, key=loss_of.get)[:2]
        checkpoints = kept(client, job["id"])
        # Kept once the job is over: the last (the 4th epoch's end) and the two best epochs.
        assert sorted(c["epoch"] for c in checkpoints) == sorted({4, *best})
        for checkpoint in checkpoints:
            assert checkpoint["metrics"]["loss"] == pytest.approx(loss_of[checkpoint["epoch"]])
        files = stack.root / "artifacts" / "checkpoints" / job["id"]
        assert len(list(files.rglob("*.pt"))) == len(checkpoints), "a dropped checkpoint stays"

        # A new job from the best checkpoint, learning next to nothing: it starts where the
        # checkpoint was, far above the 10% of a model that starts from scratch.
        [first] = [c for c in checkpoints if c["epoch"] == best[0]]
        start = {
            **JOB,
            "hyperparameters": {"epochs": 1, "learning_rate": 1e-9},
            "base_checkpoint_id": first["id"],
        }
        started = succeeded(client, client.post("/v1/jobs", json=start).json()["id"])
        assert started["spec"]["base_checkpoint_id"] == first["id"]
        assert started["base_checkpoint_job_id"] == job["id"]  # its lineage
        points = client.get(f"/v1/jobs/{started['id']}/metrics").json()["data"]
        [accuracy] = [
            p["value"] for p in points if p["name"] == "accuracy" and p["split"] == "validation"
        ]
        assert first["metrics"]["accuracy"] > 0.5
        assert accuracy == pytest.approx(first["metrics"]["accuracy"], abs=0.03)

        # What shapes the weights is the checkpoint's job's: another model is refused.
        other = {**start, "model": {"architecture": "cnn", "params": {"hidden": 16}}}
        assert_refused(client.post("/v1/jobs", json=other), "base_checkpoint_id")
        unknown = {**start, "base_checkpoint_id": "ckpt_" + "0" * 32}
        refused = client.post("/v1/jobs", json=unknown)
        assert_refused(refused, "base_checkpoint_id")
        # Another tenant's checkpoint is no checkpoint: the same answer, but for its id.
        with stack.client(stack.new_key()) as stranger:
            theirs = stranger.post("/v1/jobs", json=start)
            assert_refused(theirs, "base_checkpoint_id")
            assert theirs.json()["detail"].replace(first["id"], "ID") == refused.json()[
                "detail"
            ].replace(unknown["base_checkpoint_id"], "ID")
            assert stranger.get(f"/v1/jobs/{job['id']}/checkpoints").status_code == 404


def test_a_policy_that_keeps_nothing_resume_needs_is_refused(stack):
    with stack.client() as client:
        spec = {**JOB, "checkpoints": {"keep_last": 0, "keep_best": 3}}
        assert_refused(client.post("/v1/jobs", json=spec), "checkpoints.keep_last")
