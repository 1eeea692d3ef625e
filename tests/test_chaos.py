"""Chaos, with real processes on Postgres and Redis: kill -9 a trainer, then a whole worker,
in the middle of a job. Each time a new attempt resumes from the last checkpoint (a recorded
event), the job succeeds once, and exactly one model references it."""

import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.stack import create_postgres_database, drop_postgres_database, postgres_url, start_stack
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for

pytestmark = pytest.mark.e2e

LONG_JOB = {**DIGITS_CNN, "hyperparameters": {"epochs": 40, "batch_size": 32}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    database = f"tunery_chaos_{tag}"
    create_postgres_database(database)
    stack = start_stack(
        tmp_path_factory.mktemp("chaos"),
        postgres_url(database),
        "redis://127.0.0.1:6379/0",
        queue=f"tunery-chaos-{tag}",
        # A short lease, so that a dead worker's job is re-queued within seconds.
        extra_env={"TUNERY_CHECKPOINT_EVERY_STEPS": "10", "TUNERY_LEASE_SECONDS": "4"},
    )
    yield stack
    stack.stop()
    drop_postgres_database(database)


def trainer_pids(job_id: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"worker.core.trainer .*{job_id}"], capture_output=True)
    return [int(pid) for pid in found.stdout.split()]


def running_past_a_checkpoint(client, job_id: str) -> None:
    """Wait until the job's trainer has saved its first checkpoint (step > 10)."""
    wait_for(client, job_id, lambda j: j["progress"]["step"] > 15 or finished(j), timeout=120)
    assert trainer_pids(job_id), "the trainer finished before it could be killed"


def assert_resumed_once_and_succeeded(client, stack, job_id: str) -> None:
    job = wait_for(client, job_id, finished, timeout=300)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["attempt"] == 2
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    resumed = [e for e in events if e["message"].startswith("resumed from the checkpoint")]
    assert len(resumed) == 1 and resumed[0]["attempt"] == 2, events
    models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
    assert [m["source_job_id"] for m in models].count(job_id) == 1


def test_kill_9_of_the_trainer_resumes_from_its_checkpoint(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        running_past_a_checkpoint(client, job_id)
        for pid in trainer_pids(job_id):
            os.kill(pid, signal.SIGKILL)
        assert_resumed_once_and_succeeded(client, stack, job_id)


def test_kill_9_of_the_worker_is_reaped_and_resumed_by_another(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        running_past_a_checkpoint(client, job_id)
        worker = stack.processes[1]
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its trainer, at once
        worker.wait()
        started = time.monotonic()
        stack.start_worker()
        assert_resumed_once_and_succeeded(client, stack, job_id)
        assert time.monotonic() - started < 120
