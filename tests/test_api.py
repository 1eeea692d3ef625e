"""The /v1 API in-process, on a migrated Postgres database, dispatching to a real Redis."""

import os
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from tests.test_core import DIGITS_CNN


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


@pytest.fixture
def queue():
    """The Redis list the broker uses for our queue, emptied before the test."""
    connection = redis.Redis.from_url(os.environ["TUNERY_BROKER_URL"])
    name = os.environ["TUNERY_QUEUE"]
    connection.delete(name)
    yield lambda: connection.llen(name)
    connection.delete(name)


def job_count(client) -> int:
    return len(client.get("/v1/jobs", params={"limit": 1000}).json()["data"])


def dataset_count(client) -> int:
    return len(client.get("/v1/datasets", params={"limit": 1000}).json()["data"])


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def test_submit_records_a_queued_job_and_sends_one_message(client, queue):
    response = client.post("/v1/jobs", json={**DIGITS_CNN, "name": "digits"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job_") and len(job["id"]) == 36
    assert job["status"] == "queued"
    assert job["name"] == "digits"
    assert job["spec"]["hyperparameters"]["epochs"] == 10  # defaults are filled in and shown
    assert job["spec"]["method"] == {"name": "supervised", "params": {}}
    assert client.get(f"/v1/jobs/{job['id']}").json() == job
    assert queue() == 1
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert [(e["type"], e["status"]) for e in events] == [("status", "queued")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DIGITS_CNN, "kind": "train"}, "kind"),
        ({**DIGITS_CNN, "hyperparameters": {"epochs": -1}}, "hyperparameters.epochs"),
        ({**DIGITS_CNN, "hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate"),
        ({**DIGITS_CNN, "hyperparameters": {"optimizer": "adamax"}}, "hyperparameters.optimizer"),
        ({**DIGITS_CNN, "resources": {"device": "tpu"}}, "resources.device"),
        ({**DIGITS_CNN, "model": {"architecture": "vgg"}}, "model.architecture"),
        ({**DIGITS_CNN, "method": {"name": "mystery"}}, "method.name"),
        ({**DIGITS_CNN, "data": {"train": "builtin:missing"}}, "data.train"),
        ({**DIGITS_CNN, "data": {}}, "data.train"),
        ({**DIGITS_CNN, "model": None}, "model"),
        ({**DIGITS_CNN, "base_model_id": "model_0"}, "base_model_id"),
        ({**DIGITS_CNN, "model": None, "base_model_id": "model_unknown"}, "base_model_id"),
        ({**DIGITS_CNN, "surprise": 1}, "surprise"),
        ({**DIGITS_CNN, "kind": "adapt", "method": {"name": "mcc"},
          "data": {"target": "builtin:digits-m"}}, "data.source"),
        ({**DIGITS_CNN, "kind": "adapt", "method": {"name": "shot"},
          "data": {"target": "builtin:digits-m"}}, "base_model_id"),
    ],
)  # fmt: skip
def test_invalid_spec_is_422_naming_the_field_and_nothing_is_queued(client, queue, body, field):
    before = job_count(client)
    problem = assert_problem(client.post("/v1/jobs", json=body), 422)
    assert field in [error["field"] for error in problem["errors"]]
    assert field in problem["detail"]
    assert job_count(client) == before
    assert queue() == 0


NUL = "\x00"
CSV_OF_TWO_CLASSES = "x,label\n1,a\n2,b\n3,a\n4,b\n"
JSONL_OF_A_NUL_LABEL = '{"text": "one", "label": "a"}\n{"text": "two", "label": "b\\u0000c"}\n'


@pytest.mark.parametrize(
    ("method", "path", "request_", "field"),
    [
        ("POST", "/v1/jobs", {"json": {**DIGITS_CNN, "name": f"a{NUL}b"}}, "name"),
        ("POST", "/v1/jobs", {"json": {**DIGITS_CNN, "model": {"architecture": "cnn",
                                        "params": {f"hidden{NUL}": 8}}}}, "model.params"),
        ("POST", "/v1/jobs", {"json": {**DIGITS_CNN, "method": {"name": "supervised",
                                        "params": {"freeze": [f"x{NUL}"]}}}}, "method.params"),
        ("POST", "/v1/jobs", {"json": {**DIGITS_CNN, "data": {"train": f"builtin:{NUL}"}}},
         "data.train"),
        ("GET", "/v1/jobs/job_%00", {}, "path"),
        ("GET", "/v1/jobs", {"params": {"cursor": NUL}}, "query"),
        ("PATCH", "/v1/models/model_0", {"json": {"name": NUL}}, "name"),
        ("POST", "/v1/datasets", {"files": {"file": ("d.csv", CSV_OF_TWO_CLASSES)},
                                  "data": {"name": f"d{NUL}", "task": "classification"}}, "name"),
        ("POST", "/v1/datasets", {"files": {"file": ("d.csv", CSV_OF_TWO_CLASSES)},
                                  "data": {"name": "d", "task": "classification",
                                           "label_column": f"label{NUL}"}},
         "label_column"),
        ("POST", "/v1/datasets", {"files": {"file": ("d.jsonl", JSONL_OF_A_NUL_LABEL)},
                                  "data": {"name": "d", "task": "classification"}}, "file"),
        ("POST", "/v1/datasets", {"files": {"file": ("d.csv", CSV_OF_TWO_CLASSES.replace(
            "x,", f"x{NUL},"))}, "data": {"name": "d", "task": "classification"}}, "file"),
    ],
)  # fmt: skip
def test_a_nul_character_is_a_422_naming_the_field_never_a_500(
    client, queue, method, path, request_, field
):
    """PostgreSQL stores no NUL (U+0000) in text: every text that would reach it is refused."""
    jobs_before = job_count(client)
    datasets_before = dataset_count(client)
    problem = assert_problem(client.request(method, path, **request_), 422)
    assert field in [error["field"] for error in problem["errors"]], problem
    assert "NUL" in problem["detail"]
    assert job_count(client) == jobs_before
    assert dataset_count(client) == datasets_before
    assert queue() == 0


def test_a_nul_that_reaches_postgres_past_validation_is_a_422_too():
    """The last guard, for a text field that a future route forgets to check: psycopg's own
    refusal of a NUL character becomes a 422, not a 500."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from app import problems
    from app.db import session_scope

    unchecked = FastAPI()
    problems.install(unchecked)

    @unchecked.get("/unchecked")
    def store(value: str) -> dict:
        with session_scope() as session:
            session.execute(text("SELECT CAST(:value AS text)"), {"value": value})
        return {}

    with TestClient(unchecked) as test_client:
        assert test_client.get("/unchecked", params={"value": "fine"}).status_code == 200
        problem = assert_problem(test_client.get("/unchecked", params={"value": NUL}), 422)
    assert "NUL" in problem["detail"]


def test_malformed_json_is_a_422_problem(client):
    response = client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"})
    assert_problem(response, 422)


def test_unknown_ids_are_404_problems(client):
    for path in (
        "/v1/jobs/job_0",
        "/v1/jobs/job_0/metrics",
        "/v1/jobs/job_0/events",
        "/v1/models/model_0",
        "/v1/models/model_0/download",
    ):
        unknown_id = path.split("/")[3]  # job_0 or model_0
        assert unknown_id in assert_problem(client.get(path), 404)["detail"], path
    assert_problem(client.post("/v1/jobs/job_0/cancel"), 404)
    assert_problem(client.post("/v1/models/model_0/predict", json={"inputs": [[0]]}), 404)


def test_cancel_a_queued_job_then_cancelling_again_is_409(client):
    job = client.post("/v1/jobs", json=DIGITS_CNN).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    problem = assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)
    assert "cancelled" in problem["detail"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"


def test_list_is_newest_first_with_cursor_pagination_and_filters(client):
    created = [
        client.post("/v1/jobs", json={**DIGITS_CNN, "name": f"p{i}"}).json()["id"] for i in range(5)
    ]
    client.post(f"/v1/jobs/{created[0]}/cancel")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["data"]) <= 2
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == job_count(client)
    assert [i for i in seen if i in created] == created[::-1]
    cancelled = client.get("/v1/jobs", params={"status": "cancelled", "limit": 1000}).json()
    assert created[0] in [job["id"] for job in cancelled["data"]]
    assert {job["status"] for job in cancelled["data"]} == {"cancelled"}
    assert client.get("/v1/jobs", params={"kind": "adapt"}).json()["data"] == []
    assert_problem(client.get("/v1/jobs", params={"status": "done"}), 422)
    assert_problem(client.get("/v1/jobs", params={"cursor": "garbage"}), 422)
    assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422)


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_openapi_documents_the_v1_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/metrics",
        "/v1/jobs/{job_id}/events",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/models/{model_id}/download",
        "/v1/models/{model_id}/predict",
        "/healthz",
        "/readyz",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_predict_with_a_text_classifier_takes_strings(client, api_key):
    """A model registered in the database, its file made by the training core."""
    from pathlib import Path

    from app.config import get_settings
    from app.db import session_scope
    from app.models import Job, Model, new_id
    from tests.test_methods import FEW_TEXTS, TINY_TRANSFORMER, run
    from trainer.artifact import save_model

    result, _ = run(
        {"kind": "finetune", "model": TINY_TRANSFORMER, "data": {"train": FEW_TEXTS},
         "hyperparameters": {"epochs": 1}}
    )  # fmt: skip
    model_id, job_id = new_id("model"), new_id("job")
    relative = Path("models") / model_id / "model.safetensors"
    (get_settings().artifact_dir / relative).parent.mkdir(parents=True)
    save_model(result.model, result.card, get_settings().artifact_dir / relative)
    with session_scope() as session:
        session.add(Job(id=job_id, tenant_id=api_key.tenant_id, kind="finetune",
                        status="succeeded", spec={}, max_attempts=1))  # fmt: skip
        session.flush()
        session.add(Model(id=model_id, tenant_id=api_key.tenant_id, source_job_id=job_id,
                          architecture="transformer",
                          task="classification", card=result.card, path=str(relative),
                          sha256="0" * 64, size_bytes=1))  # fmt: skip

    texts = ["Shares in the bank fell sharply", "The striker scored twice on Saturday"]
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(label in body["labels"] for label in body["predictions"])
    assert len(body["probabilities"]) == 2
    numbers = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1, 2, 3]]})
    assert numbers.status_code == 422
    assert "strings" in numbers.json()["detail"]


def test_an_idempotency_key_makes_a_replay_return_the_first_job(client, queue):
    key = {"Idempotency-Key": f"submit-{uuid.uuid4()}"}
    first = client.post("/v1/jobs", json=DIGITS_CNN, headers=key)
    assert first.status_code == 201, first.text
    count = job_count(client)
    replay = client.post("/v1/jobs", json=DIGITS_CNN, headers=key)
    assert (replay.status_code, replay.json()) == (201, first.json())
    assert job_count(client) == count and queue() == 1
    other = client.post("/v1/jobs", json={**DIGITS_CNN, "name": "other"}, headers=key)
    assert assert_problem(other, 422)["errors"][0]["field"] == "Idempotency-Key"
    assert job_count(client) == count
    fresh = client.post(
        "/v1/jobs", json=DIGITS_CNN, headers={"Idempotency-Key": "x" + key["Idempotency-Key"]}
    )
    assert fresh.json()["id"] != first.json()["id"]
