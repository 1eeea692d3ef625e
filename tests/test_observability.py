"""Prometheus metrics at /metrics (in-process, on Postgres and Redis) and JSON logs from a real
API server and worker."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import postgres_redis_stack
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")
QUICK = DIGITS_CNN | {
    "data": {"train": {"dataset": "builtin:digits", "fraction": 0.1}},
    "hyperparameters": {"epochs": 1},
}


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


def scrape(get) -> tuple[str, dict[tuple[str, frozenset], float]]:
    """The exposition text, and every sample by (name, labels)."""
    response = get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def jobs_by_status(samples: dict) -> dict[str, float]:
    return {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "tunery_jobs"
    }


def test_jobs_by_status_and_queue_depth_follow_a_job_submitted_then_cancelled(client):
    _, before = scrape(client.get)
    assert set(STATUSES) <= set(jobs_by_status(before))  # every status, 0 where none
    job = client.post("/v1/jobs", json=QUICK).json()

    _, queued = scrape(client.get)
    assert jobs_by_status(queued)["queued"] == jobs_by_status(before)["queued"] + 1
    assert queued[("tunery_queue_depth", frozenset())] == jobs_by_status(queued)["queued"]
    # The message sent for it waits in Redis: no worker consumes the in-process tests' queue.
    broker = ("tunery_broker_queue_length", frozenset())
    assert queued[broker] == before[broker] + 1

    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    _, cancelled = scrape(client.get)
    assert jobs_by_status(cancelled)["queued"] == jobs_by_status(before)["queued"]
    assert jobs_by_status(cancelled)["cancelled"] == jobs_by_status(before)["cancelled"] + 1


def test_a_finished_job_is_observed_once_in_the_duration_histogram(client):
    from app.db import session_scope
    from app.services import job_state

    labels = frozenset({"kind": "finetune", "status": "cancelled"}.items())
    count = ("tunery_job_duration_seconds_count", labels)
    _, before = scrape(client.get)
    job = client.post("/v1/jobs", json=QUICK).json()
    with session_scope() as session:  # as a worker does: the job gets a start time
        assert job_state.claim(session, job["id"], "test-worker", 60) == 1
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200

    _, after = scrape(client.get)
    assert after[count] == before.get(count, 0) + 1
    _, again = scrape(client.get)  # seen at the last scrape: not counted twice
    assert again[count] == after[count]


def test_requests_are_labelled_by_route_template_never_by_path(client):
    job = client.post("/v1/jobs", json=QUICK).json()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    unknown = f"/v1/nothing-here/{uuid.uuid4().hex}"
    assert client.get(unknown).status_code == 404
    client.post(f"/v1/jobs/{job['id']}/cancel")

    text, samples = scrape(client.get)
    routes = {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"])
        for (name, labels) in samples
        if name == "tunery_http_request_duration_seconds_count"
    }
    assert ("GET", "/v1/jobs/{job_id}", "200") in routes
    assert ("POST", "/v1/jobs/{job_id}/cancel", "200") in routes
    assert ("GET", "unmatched", "404") in routes
    assert job["id"] not in text and unknown not in text
    assert job["id"].removeprefix("job_") not in text


def test_metrics_needs_no_key_while_v1_still_does(client):
    from app.main import app

    anonymous = TestClient(app)
    _, samples = scrape(anonymous.get)
    assert ("tunery_queue_depth", frozenset()) in samples
    assert anonymous.get("/v1/jobs").status_code == 401
    assert "/metrics" not in anonymous.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = {"TUNERY_LOG_FORMAT": "json"}
    root = tmp_path_factory.mktemp("observability")
    with postgres_redis_stack(root, "observability", extra_env=settings) as stack:
        yield stack


def json_records(path: Path) -> list[dict]:
    """Every line of a log, each of which must be one JSON object."""
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)  # fails the test, naming the line, if it is not JSON
            assert {"time", "level", "logger", "message"} <= set(record), line
            records.append(record)
    return records


def wait_for_line(path: Path, text: str, timeout: float = 10) -> None:
    """The worker logs a job's outcome just after committing it: the API may see it first."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {path}"
        time.sleep(0.2)


@pytest.mark.e2e
def test_api_and_worker_log_json_lines_and_name_the_job(stack):
    with stack.client() as client:
        job = client.post("/v1/jobs", json=QUICK).json()
        job = wait_for(client, job["id"], finished, timeout=120)
        assert job["status"] == "succeeded", (job, stack.logs())
    worker_log, api_log = stack.root / "worker.log", stack.root / "api.log"
    wait_for_line(worker_log, f"job {job['id']} attempt 1 succeeded")

    worker = json_records(worker_log)
    assert any(record["message"].endswith(" ready.") for record in worker)
    about_the_job = [record for record in worker if job["id"] in json.dumps(record)]
    # Celery's task received and succeeded, the supervisor's trainer start and outcome.
    assert len(about_the_job) >= 4, worker
    assert all(record["job_id"] == job["id"] for record in about_the_job), about_the_job

    access = [record for record in json_records(api_log) if record["logger"] == "uvicorn.access"]
    polled = [record for record in access if record["path"] == f"/v1/jobs/{job['id']}"]
    assert polled and all(record["status_code"] == 200 for record in polled)
    assert stack.key not in api_log.read_text() + worker_log.read_text()

    # The real process's scrape counts the job that a worker process finished.
    with httpx.Client(base_url=stack.base_url) as anonymous:
        _, samples = scrape(anonymous.get)
    labels = frozenset({"kind": "finetune", "status": "succeeded"}.items())
    assert samples[("tunery_job_duration_seconds_count", labels)] == 1
    assert samples[("tunery_jobs", frozenset({"status": "succeeded"}.items()))] == 1
