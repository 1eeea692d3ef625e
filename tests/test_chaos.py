"""Chaos, with real processes on Postgres and Redis: kill -9 a trainer, then a whole worker,
in the middle of a job. Each time a new attempt resumes from the last checkpoint (a recorded
event), the job succeeds once, and exactly one model references it."""

import os
import signal
import time
from datetime import datetime

import httpx
import pytest
import redis

from tests import servers
from tests.stack import REDIS_URL, postgres_redis_stack, trainer_pids
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, gone, wait_for

pytestmark = pytest.mark.e2e

LONG_JOB = {**DIGITS_CNN, "hyperparameters": {"epochs": 40, "batch_size": 32}}
SHORT_JOB = {**DIGITS_CNN, "hyperparameters": {"epochs": 2}}
EVERY = 10  # checkpoint interval, in steps
FIGURES: list[str] = []  # recovery figures, printed at the end for docs/RELIABILITY.md


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A short lease and re-dispatch delay, so that recovery takes seconds, not minutes.
    settings = {
        "TUNERY_CHECKPOINT_EVERY_STEPS": str(EVERY),
        "TUNERY_LEASE_SECONDS": "4",
        "TUNERY_REDISPATCH_AFTER_SECONDS": "3",
        # A Redis database of its own, which test_a_flushed_broker_loses_no_queued_job empties.
        "TUNERY_BROKER_URL": REDIS_URL.rsplit("/", 1)[0] + "/1",
    }
    with postgres_redis_stack(tmp_path_factory.mktemp("chaos"), "chaos", extra_env=settings) as s:
        yield s
    print("\n" + "\n".join(FIGURES))  # shown with -s: the figures in docs/RELIABILITY.md


def running_past_a_checkpoint(client, job_id: str) -> int:
    """Wait until the job's trainer has saved a checkpoint; the step last reported."""
    job = wait_for(client, job_id, lambda j: j["progress"]["step"] > 1.5 * EVERY or finished(j))
    assert trainer_pids(job_id), "the trainer finished before it could be killed"
    return job["progress"]["step"]


def assert_resumed_once_and_succeeded(
    client, stack, job_id: str, seen_step: int, killed_at: float, what: str
) -> None:
    job = wait_for(client, job_id, finished, timeout=300)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["attempt"] == 2
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    resumed = [e for e in events if e["message"].startswith("resumed from the checkpoint")]
    assert len(resumed) == 1 and resumed[0]["attempt"] == 2, events
    resumed_step = int(resumed[0]["message"].split("step ")[1].split(" ")[0])
    # Steps redone: at most one interval before what the killed trainer had reported.
    assert seen_step - EVERY < resumed_step <= job["progress"]["total_steps"]
    models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
    assert [m["source_job_id"] for m in models].count(job_id) == 1
    assert gone(stack.root / "runs" / job_id), "the finished job's scratch directory was kept"
    resumed_at = datetime.fromisoformat(resumed[0]["time"]).timestamp()
    FIGURES.append(
        f"{what}: resumed {resumed_at - killed_at:.1f} s after the kill, from step "
        f"{resumed_step} (step {seen_step} had been reported; checkpoint every {EVERY})"
    )


def test_kill_9_of_the_trainer_resumes_from_its_checkpoint(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        seen = running_past_a_checkpoint(client, job_id)
        for pid in trainer_pids(job_id):
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        assert_resumed_once_and_succeeded(client, stack, job_id, seen, killed_at, "kill -9 trainer")


def test_kill_9_of_the_worker_is_reaped_and_resumed_by_another(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        seen = running_past_a_checkpoint(client, job_id)
        worker = stack.processes[-1]
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its trainer, at once
        worker.wait()
        killed_at = time.time()
        stack.start_worker()
        assert_resumed_once_and_succeeded(client, stack, job_id, seen, killed_at, "kill -9 worker")


def test_the_same_task_delivered_five_times_is_claimed_once(stack):
    from celery import Celery

    from app.broker import RUN_JOB_TASK

    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=SHORT_JOB).json()["id"]
        sender = Celery(broker=stack.env["TUNERY_BROKER_URL"])
        for _ in range(5):
            sender.send_task(RUN_JOB_TASK, args=[job_id], queue=stack.env["TUNERY_QUEUE"])
        job = wait_for(client, job_id, finished)
        time.sleep(3)  # let the duplicates arrive and find the job done
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert (job["status"], job["attempt"]) == ("succeeded", 1), job
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        assert [e["status"] for e in events if e["type"] == "status"] == [
            "queued",
            "running",
            "succeeded",
        ]


def test_a_flushed_broker_loses_no_queued_job(stack):
    worker = stack.processes[-1]
    os.killpg(worker.pid, signal.SIGKILL)  # nobody consumes while the messages wait
    worker.wait()
    with stack.client() as client:
        job_ids = [client.post("/v1/jobs", json=SHORT_JOB).json()["id"] for _ in range(2)]
        redis.Redis.from_url(stack.env["TUNERY_BROKER_URL"]).flushdb()
        flushed_at = time.time()
        stack.start_worker()
        for job_id in job_ids:
            job = wait_for(client, job_id, finished)
            assert job["status"] == "succeeded", (job, stack.logs())
        FIGURES.append(
            f"FLUSHDB with 2 queued jobs: both done {time.time() - flushed_at:.1f} s later"
        )


def _restart(name: str) -> None:
    """Restart the run's own server (tests/servers.py): never one the user named."""
    server = servers.STARTED.get(name)
    if server is None:
        pytest.skip(f"restarts only the run's own {name}; TUNERY_TEST_* names another")
    server.restart()


def wait_through_outage(stack, job_id: str) -> dict:
    """Poll until the job ends, riding out the seconds when the API cannot answer."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with stack.client() as client:
                job = client.get(f"/v1/jobs/{job_id}").json()
            if finished(job):
                return job
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish:\n{stack.logs()}")


def assert_succeeded_in_one_attempt(stack, job_id: str) -> None:
    """The outage cost the job nothing: it ended `succeeded` in its first attempt, with one
    model, each status recorded once."""
    job = wait_through_outage(stack, job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["attempt"] == 1, job
    with stack.client() as client:
        models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    assert [m["source_job_id"] for m in models].count(job_id) == 1
    statuses = [(e["status"], e["attempt"]) for e in events if e["type"] == "status"]
    assert statuses == [("queued", 0), ("running", 1), ("succeeded", 1)], events
    assert gone(stack.root / "runs" / job_id), "the finished job's scratch directory was kept"


def test_a_postgres_restart_mid_job_does_not_lose_it(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        running_past_a_checkpoint(client, job_id)
    _restart("postgres")
    assert_succeeded_in_one_attempt(stack, job_id)


def test_while_postgres_is_down_the_api_answers_503_and_the_job_goes_on(stack):
    """An outage is a 503 with Retry-After (a client's cue to try again), never a 500; the
    running job rides it out in its first attempt."""
    server = servers.STARTED.get("postgres")
    if server is None:
        pytest.skip("stops only the run's own postgres; TUNERY_TEST_DATABASE_URL names another")
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        running_past_a_checkpoint(client, job_id)
        server.stop()
        try:
            for path in (f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/sweeps/{job_id}"):
                answer = client.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["retry-after"] == "1"
                assert answer.headers["content-type"] == "application/problem+json"
        finally:
            server.start()
    assert_succeeded_in_one_attempt(stack, job_id)


def test_a_redis_restart_mid_job_loses_no_job(stack):
    with stack.client() as client:
        running = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        running_past_a_checkpoint(client, running)
        queued = client.post("/v1/jobs", json=SHORT_JOB).json()["id"]  # waits behind it
    _restart("redis")
    with stack.client() as client:
        after = client.post("/v1/jobs", json=SHORT_JOB).json()["id"]  # sent after the restart
    for job_id in (running, queued, after):
        assert_succeeded_in_one_attempt(stack, job_id)


def test_a_stopping_worker_hands_its_job_back_at_a_checkpoint(stack):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
        seen = running_past_a_checkpoint(client, job_id)
        worker = stack.processes[-1]
        os.kill(worker.pid, signal.SIGTERM)  # a warm shutdown, as a deploy sends
        stopped_at = time.time()
        # A warm shutdown exits 0 within the minute (wait raises TimeoutExpired otherwise)...
        assert worker.wait(timeout=60) == 0, stack.logs()
        # ...and it did not wait for the 40 epochs: the job went back to the queue unfinished.
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "queued", job
        assert job["progress"]["step"] < job["progress"]["total_steps"], job
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        assert any(e["message"].startswith("queued: interrupted") for e in events), events
        stack.start_worker()
        assert_resumed_once_and_succeeded(
            client, stack, job_id, seen, stopped_at, "SIGTERM to the worker"
        )


SLOW_IMPORTS = """
from pathlib import Path
import time
if b"worker.zygote" in Path("/proc/self/cmdline").read_bytes():
    time.sleep({seconds})
"""


def test_a_trainer_slow_to_start_keeps_its_job(stack, tmp_path):
    """A zygote whose imports take two leases (a machine importing torch in every process at
    once) delays the first step; the supervisor keeps renewing the lease meanwhile, so the
    job is not reaped and run again."""
    lease = float(stack.env["TUNERY_LEASE_SECONDS"])
    (tmp_path / "sitecustomize.py").write_text(SLOW_IMPORTS.format(seconds=2 * lease))
    worker = stack.processes[-1]
    os.kill(worker.pid, signal.SIGTERM)
    worker.wait(timeout=60)
    slow = stack.start_worker(extra_env={"PYTHONPATH": str(tmp_path)})
    try:
        with stack.client() as client:
            job_id = client.post("/v1/jobs", json=SHORT_JOB).json()["id"]
            job = wait_for(client, job_id, finished, timeout=120)
            assert (job["status"], job["attempt"]) == ("succeeded", 1), (job, stack.logs())
            events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
            statuses = [e["status"] for e in events if e["type"] == "status"]
            assert statuses == ["queued", "running", "succeeded"], events
    finally:
        os.kill(slow.pid, signal.SIGTERM)
        slow.wait(timeout=60)
        stack.start_worker()
