"""Routing by size (`TUNERY_GPU_QUEUES`): the table as settings read it, the queue each job goes
to, and through a running API on Postgres and Redis, which queue each job's message lands in,
the spec no worker can run refused on every submission path, and a worker with too few GPUs
refusing to start. This machine has no GPU: a worker that accepts a sized queue is not run."""

import ast
import json
import time
import uuid

import pytest
import redis
from pydantic import ValidationError

from app.config import Settings
from app.services.dispatch import queue_for
from tests.stack import REDIS_URL, postgres_redis_stack
from tests.test_api import assert_problem
from tests.test_core import DIGITS_CNN
from tests.test_sweeps import SWEEP
from trainer.spec import Resources


def test_the_table_is_read_into_sizes_and_queues():
    table = Settings(gpu_queues=" 8=gpu8, 1=gpu1,4=gpu4,").gpu_queues
    assert table == {1: "gpu1", 4: "gpu4", 8: "gpu8"}
    assert Settings().gpu_queues == {}


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"gpu_queues": "1=gpu1,four=gpu4"}, "'four=gpu4' is not GPUS=QUEUE"),
        ({"gpu_queues": "0=gpu0"}, "'0=gpu0' is not GPUS=QUEUE"),
        ({"gpu_queues": "1=gpu1,2"}, "'2' is not GPUS=QUEUE"),
        ({"gpu_queues": "1="}, "'1=' is not GPUS=QUEUE"),
        ({"gpu_queues": "1:gpu1"}, "'1:gpu1' is not GPUS=QUEUE"),
        ({"gpu_queues": "1=a,1=b"}, "two queues for size 1"),
        ({"gpu_queues": "1=gpu,2=gpu"}, "one queue for two sizes"),
        ({"gpu_queues": "1=cpu", "queue": "cpu"}, "names TUNERY_QUEUE"),
        ({"gpu_queues": "1=gpu1", "gpu_queue": "gpu"}, "TUNERY_GPU_QUEUES or TUNERY_GPU_QUEUE"),
    ],
)
def test_a_malformed_table_stops_the_settings_naming_the_variable(variables, words):
    secret = "postgresql+psycopg://tunery:the-password@db/tunery"
    with pytest.raises(ValidationError) as error:
        Settings(database_url=secret, **variables)
    assert words in str(error.value)
    assert "TUNERY_GPU_QUEUES" in str(error.value)
    assert "the-password" not in str(error.value)  # the error is logged as the process stops


def cuda(processes: int) -> Resources:
    return Resources(device="cuda", processes=processes)


def test_a_cuda_job_goes_to_the_smallest_workers_with_a_gpu_per_process(configured):
    configured(TUNERY_QUEUE="cpu", TUNERY_GPU_QUEUES="1=gpu1,4=gpu4,8=gpu8")
    assert [queue_for(cuda(p)) for p in (1, 2, 4, 5, 8)] == ["gpu1", "gpu4", "gpu4", "gpu8", "gpu8"]
    assert queue_for(Resources(processes=8)) == "cpu"  # auto
    assert queue_for(Resources(device="cpu", processes=8)) == "cpu"
    # Submitted before the table shrank: to the largest workers, whose trainer says why not.
    assert queue_for(cuda(9)) == "gpu8"


def test_one_gpu_queue_of_unknown_size_takes_every_cuda_job_as_before(configured):
    configured(TUNERY_QUEUE="cpu", TUNERY_GPU_QUEUE="gpu")
    assert [queue_for(cuda(p)) for p in (1, 8)] == ["gpu", "gpu"]
    assert queue_for(Resources()) == "cpu"
    configured(TUNERY_GPU_QUEUE="")
    assert queue_for(cuda(8)) == "cpu"


# Through the API


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The API and a worker of CPU jobs; `cuda` jobs go to queues of 1- and 4-GPU workers,
    which no worker consumes here, so their messages stay there to be read."""
    tag = uuid.uuid4().hex[:8]
    sized = {1: f"tunery-routing-{tag}-gpu1", 4: f"tunery-routing-{tag}-gpu4"}
    table = ",".join(f"{size}={queue}" for size, queue in sized.items())
    root = tmp_path_factory.mktemp("routing")
    with postgres_redis_stack(root, "routing", extra_env={"TUNERY_GPU_QUEUES": table}) as s:
        s.sized = sized
        yield s
    redis.Redis.from_url(REDIS_URL).delete(*sized.values())


def job_ids_in(queue: str) -> list[str]:
    """The job of each message waiting in a queue (kombu's Redis list, its task's arguments in
    the message's headers)."""
    messages = redis.Redis.from_url(REDIS_URL).lrange(queue, 0, -1)
    return [ast.literal_eval(json.loads(m)["headers"]["argsrepr"])[0] for m in messages]


def messages_sent(queues: list[str], count: int, timeout: float = 10) -> None:
    """Until the queues hold this many messages: the API sends after it answers."""
    deadline = time.monotonic() + timeout
    while sum(len(job_ids_in(q)) for q in queues) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def on_cuda(processes: int) -> dict:
    return {**DIGITS_CNN, "resources": {"device": "cuda", "processes": processes}}


@pytest.mark.e2e
def test_each_cuda_job_lands_in_its_sizes_queue_and_a_resumed_one_again(stack):
    with stack.client() as client:
        ids = {}
        for processes in (1, 2, 4):
            response = client.post("/v1/jobs", json=on_cuda(processes))
            assert response.status_code == 201, response.text
            ids[processes] = response.json()["id"]
        # Paused while queued, then resumed: sent again, to the same queue.
        assert client.post(f"/v1/jobs/{ids[2]}/pause").json()["status"] == "paused"
        assert client.post(f"/v1/jobs/{ids[2]}/resume").json()["status"] == "queued"
        messages_sent(list(stack.sized.values()), 4)
        assert job_ids_in(stack.sized[1]) == [ids[1]]
        assert sorted(job_ids_in(stack.sized[4])) == sorted([ids[2], ids[4], ids[2]])
        for job_id in ids.values():
            assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def assert_refused(response, field: str) -> None:
    problem = assert_problem(response, 422)
    (error,) = problem["errors"]
    assert error["field"] == field, problem
    assert "the largest GPU workers have 4 (TUNERY_GPU_QUEUES)" in error["message"], problem


@pytest.mark.e2e
def test_a_cuda_job_larger_than_every_worker_is_refused_on_each_submission_path(stack):
    with stack.client() as client:
        before = client.get("/v1/jobs", params={"limit": 1000}).json()["data"]
        assert_refused(client.post("/v1/jobs", json=on_cuda(5)), "resources.processes")
        sweep = {**SWEEP, "job": on_cuda(8)}
        assert_refused(client.post("/v1/sweeps", json=sweep), "job.resources.processes")
        searched = {"resources.processes": {"type": "int", "low": 1, "high": 5}}
        sweep = {**SWEEP, "job": on_cuda(1), "parameters": searched}
        problem = assert_problem(client.post("/v1/sweeps", json=sweep), 422)
        assert [e["field"] for e in problem["errors"]] == ["parameters.resources.processes"]
        assert "refuses 5: resources.processes" in problem["errors"][0]["message"]
        assert client.get("/v1/jobs", params={"limit": 1000}).json()["data"] == before
        assert client.get("/v1/sweeps").json()["data"] == []


@pytest.mark.e2e
def test_a_worker_of_a_sized_queue_with_too_few_gpus_refuses_to_start(stack):
    worker = stack.start_worker(queues=[stack.sized[1], stack.sized[4]])
    assert worker.wait(timeout=60) == 78  # EX_CONFIG
    log = stack.logs()
    assert f"it consumes '{stack.sized[4]}', the queue of 4-GPU workers" in log, log
    assert "and sees 0 GPUs: give it more GPUs" in log, log
    hidden = stack.start_worker(queues=[stack.sized[1]], extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.wait(timeout=60) == 78
    assert (
        "1-GPU workers (TUNERY_GPU_QUEUES), and sees 0 GPUs (CUDA_VISIBLE_DEVICES=)" in stack.logs()
    )
