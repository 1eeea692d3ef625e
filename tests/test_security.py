"""Tenancy in-process on Postgres: every `/v1` route demands a key; another tenant's ids answer
exactly as unknown ids do; revoked and read-only keys; quotas and the request rate."""

import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import session_scope
from app.models import (
    AliasMove,
    Dataset,
    Job,
    Model,
    ModelVersion,
    RegisteredModel,
    Sweep,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.problems import is_openai_path
from app.services import tenants
from tests import files
from tests.conftest import Key, new_tenant
from tests.test_api import assert_problem
from tests.test_core import DIGITS_CNN
from tests.test_registry import import_model, network, weights
from tests.test_sft import lookup_lines, write_jsonl
from tests.test_sweeps import SWEEP
from tests.tiny_lm import configure, save_tiny_causal_lm

UNKNOWN = {
    "job": "job_" + "0" * 32,
    "dataset": "ds_" + "0" * 32,
    "model": "model_" + "0" * 32,
    "sweep": "sweep_" + "0" * 32,
    "images": "ds_" + "1" * 32,
    "lm": "model_" + "1" * 32,
    "file": "ds_" + "2" * 32,
    "fine_tuning_job": "job_" + "2" * 32,
    "webhook": "wh_" + "0" * 32,
    "delivery": "whd_" + "0" * 32,
    "name": "name-" + "0" * 32,
    "alias": "alias-" + "0" * 32,
}


@pytest.fixture(scope="module")
def app(api_database):
    from app.main import app

    return app


def client_for(app, key: Key | None) -> TestClient:
    return TestClient(app, headers=key.headers if key else {})


@dataclass
class Owned:
    """What tenant `owner` made: a queued job, an uploaded dataset, an imported model, a sweep,
    images the model reads (to score it on), a language model (to generate with), by OpenAI's
    routes a file and a queued fine-tuning job on it, a webhook and the delivery of its ping,
    and a registered model's name (the model its version 1) and an alias of it that points at
    that version."""

    owner: Key
    job: str
    dataset: str
    model: str
    sweep: str
    images: str
    lm: str
    file: str
    fine_tuning_job: str
    webhook: str
    delivery: str
    name: str
    alias: str

    @property
    def ids(self) -> dict[str, str]:
        return {
            "job": self.job,
            "dataset": self.dataset,
            "model": self.model,
            "sweep": self.sweep,
            "images": self.images,
            "lm": self.lm,
            "file": self.file,
            "fine_tuning_job": self.fine_tuning_job,
            "webhook": self.webhook,
            "delivery": self.delivery,
            "name": self.name,
            "alias": self.alias,
        }


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_causal_lm(tmp_path_factory.mktemp("hf") / "llama", "llama")


@pytest.fixture
def owned(app, tiny_llama, monkeypatch, tmp_path) -> Owned:
    configure(monkeypatch, {"tiny-llama": tiny_llama})
    owner = new_tenant()
    with client_for(app, owner) as client:
        job = client.post("/v1/jobs", json=DIGITS_CNN)
        dataset = client.post(
            "/v1/datasets",
            files={"file": ("cancer.csv", files.cancer_csv())},
            data={"name": "cancer", "task": "classification", "label_column": "label"},
        )
        model = import_model(client, weights(network()))
        sweep = client.post("/v1/sweeps", json=SWEEP)
        images = client.post(
            "/v1/datasets",
            files={"file": ("digits.npz", files.digits_npz(60))},
            data={"name": "digits-8x8", "task": "classification"},
        )
        lm = client.post("/v1/models/import", data={"hf_model": "tiny-llama"})
        for response in (job, dataset, model, sweep, images, lm):
            assert response.status_code == 201, response.text
        with write_jsonl(tmp_path / "chat.jsonl", lookup_lines()).open("rb") as chat:
            file = client.post("/v1/files", files={"file": chat}, data={"purpose": "fine-tune"})
        assert file.status_code == 200, file.text
        fine_tuning = {"model": "tiny-llama", "training_file": file.json()["id"]}
        fine_tuning_job = client.post("/v1/fine_tuning/jobs", json=fine_tuning)
        assert fine_tuning_job.status_code == 200, fine_tuning_job.text
        webhook = client.post("/v1/webhooks", json={"url": WEBHOOK_URL, "events": ["job.failed"]})
        assert webhook.status_code == 201, webhook.text
        delivery = client.post(f"/v1/webhooks/{webhook.json()['id']}/ping")
        assert delivery.status_code == 202, delivery.text
        name, alias = f"name-{uuid.uuid4().hex}", f"alias-{uuid.uuid4().hex}"
        registered = client.post(
            f"/v1/registered-models/{name}/versions", json={"model_id": model.json()["id"]}
        )
        assert registered.status_code == 201, registered.text
        aliased = client.put(f"/v1/registered-models/{name}/aliases/{alias}", json={"version": 1})
        assert aliased.status_code == 200, aliased.text
    made = (
        r.json()["id"]
        for r in (job, dataset, model, sweep, images, lm, file, fine_tuning_job, webhook, delivery)
    )
    return Owned(owner, *made, name, alias)


PREDICT = {"json": {"inputs": torch.rand(1, 1, 8, 8).tolist()}}
WEBHOOK_URL = "https://93.184.215.14/hooks"  # public: accepted; no process here sends webhooks
# Every route that takes an id, with a request that succeeds for the owner (its arguments, or a
# function of the ids that makes them). Mutating ones last; the stream after the cancel, so that
# it ends. `{lm}` is a model too: the language model, for the route only it answers.
ID_ROUTES = [
    ("GET", "/v1/jobs/{job}", {}),
    ("GET", "/v1/jobs/{job}/metrics", {}),
    ("GET", "/v1/jobs/{job}/events", {}),
    ("GET", "/v1/jobs/{job}/checkpoints", {}),
    ("GET", "/v1/datasets/{dataset}", {}),
    ("GET", "/v1/datasets/{dataset}/preview", {}),
    ("GET", "/v1/models/{model}", {}),
    ("GET", "/v1/models/{model}/download", {}),
    ("GET", "/v1/sweeps/{sweep}", {}),
    ("GET", "/v1/sweeps/{sweep}/trials", {}),
    ("GET", "/v1/files/{file}", {}),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job}", {}),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job}/events", {}),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job}/checkpoints", {}),
    ("GET", "/v1/webhooks/{webhook}", {}),
    ("GET", "/v1/webhooks/{webhook}/deliveries", {}),
    ("GET", "/v1/registered-models/{name}", {}),
    ("POST", "/v1/models/{model}/predict", PREDICT),
    ("POST", "/v1/models/{lm}/generate", {"json": {"prompt": "the", "max_tokens": 2}}),
    (
        "POST",
        "/v1/models/{model}/transferability",
        lambda ids: {"json": {"dataset": ids["images"]}},
    ),
    ("POST", "/v1/datasets/{dataset}/rank-models", {"json": {}}),
    ("PATCH", "/v1/models/{model}", {"json": {"tags": ["mine"]}}),
    ("POST", "/v1/jobs/{job}/pause", {}),  # queued: paused at once
    ("POST", "/v1/jobs/{job}/resume", {}),
    # The language model as the name's next version: another tenant's model is no model.
    (
        "POST",
        "/v1/registered-models/{name}/versions",
        lambda ids: {"json": {"model_id": ids["lm"]}},
    ),
    ("PUT", "/v1/registered-models/{name}/aliases/{alias}", {"json": {"version": 2}}),
    ("POST", "/v1/jobs/{job}/cancel", {}),
    ("GET", "/v1/jobs/{job}/stream", {}),
    ("POST", "/v1/sweeps/{sweep}/cancel", {}),
    ("GET", "/v1/sweeps/{sweep}/stream", {}),
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job}/cancel", {}),
    ("DELETE", "/v1/datasets/{dataset}", {}),
    ("DELETE", "/v1/registered-models/{name}/aliases/{alias}", {}),
    ("DELETE", "/v1/models/{model}", {}),  # once no alias points at it
    ("DELETE", "/v1/files/{file}", {}),  # once the cancel left no job reading it
    ("PATCH", "/v1/webhooks/{webhook}", {"json": {"events": ["job.succeeded"]}}),
    ("POST", "/v1/webhooks/{webhook}/ping", {}),
    ("POST", "/v1/webhooks/{webhook}/deliveries/{delivery}/redeliver", {}),
    ("DELETE", "/v1/webhooks/{webhook}", {}),
]


def _fill(template: str, ids: dict[str, str]) -> str:
    return template.format(**ids)


def _send(client: TestClient, method: str, template: str, kwargs, ids: dict[str, str]):
    """A route of the matrix called on `ids`."""
    return client.request(
        method, _fill(template, ids), **(kwargs(ids) if callable(kwargs) else kwargs)
    )


def _route_templates(app) -> set[tuple[str, str]]:
    """(method, path) of every /v1 route, path parameters renamed to the resource they name."""
    return {
        (method.upper(), re.sub(r"\{(\w+)_id\}", r"{\1}", path))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in operations
    }


def test_the_matrix_covers_every_route_that_takes_an_id(app):
    with_ids = {(m, p) for m, p in _route_templates(app) if "{" in p}
    assert with_ids == {(method, path.replace("{lm}", "{model}")) for method, path, _ in ID_ROUTES}


def test_every_v1_route_demands_a_key(app):
    revoked = new_tenant()
    with session_scope() as session:
        key_id = tenants.list_keys(session, _tenant_name(revoked))[0].id
        tenants.revoke_key(session, key_id)
    wrong = [
        {},
        {"Authorization": "Bearer tunery_not-a-key"},
        {"Authorization": f"Basic {revoked.secret}"},
        revoked.headers,
    ]
    routes = [*sorted(_route_templates(app)), ("GET", "/v1/no-such-route")]
    with client_for(app, None) as client:
        for method, template in routes:
            for headers in wrong:
                response = client.request(method, _fill(template, UNKNOWN), headers=headers)
                if is_openai_path(template):  # in OpenAI's error shape, for its clients
                    assert response.status_code == 401, (method, template)
                    detail = response.json()["error"]["message"]
                else:
                    detail = assert_problem(response, 401)["detail"]
                assert response.headers["WWW-Authenticate"] == "Bearer", (method, template)
                assert "key" in detail


def _tenant_name(key: Key) -> str:
    from app.models import Tenant

    with session_scope() as session:
        return session.get(Tenant, key.tenant_id).name


def _without_ids(problem: dict, *ids: str) -> str:
    text = repr(problem)
    for id_ in ids:
        text = text.replace(id_, "<id>")
    return text


def test_another_tenants_ids_answer_as_unknown_ids_do_and_change_nothing(app, owned):
    ids = owned.ids
    with client_for(app, new_tenant()) as stranger:
        for method, template, kwargs in ID_ROUTES:
            theirs = _send(stranger, method, template, kwargs, ids)
            unknown = _send(stranger, method, template, kwargs, UNKNOWN)
            assert theirs.status_code == unknown.status_code == 404, (method, template)
            assert _without_ids(theirs.json(), *ids.values()) == _without_ids(
                unknown.json(), *UNKNOWN.values()
            )
        for path in (
            "/v1/jobs",
            "/v1/datasets",
            "/v1/models",
            f"/v1/models?parent_id={owned.model}",
            "/v1/sweeps",
            "/v1/files",
            "/v1/fine_tuning/jobs",
            "/v1/webhooks",
            "/v1/registered-models",
        ):
            assert stranger.get(path).json()["data"] == [], path
        # Naming another tenant's dataset or model in a spec is the same as naming none.
        spec = DIGITS_CNN | {"data": {"train": owned.dataset}, "base_model_id": owned.model}
        errors = assert_problem(stranger.post("/v1/jobs", json=spec), 422)["errors"]
        assert {e["field"] for e in errors} >= {"base_model_id"}
        adapt = {"kind": "adapt", "model": {"architecture": "mlp"}, "method": {"name": "dann"}}
        for field, spec_with in (
            ("data.train", lambda ds: DIGITS_CNN | {"data": {"train": ds}}),
            (
                "data.source",
                lambda ds: adapt | {"data": {"source": ds, "target": "builtin:breast-cancer"}},
            ),
            (
                "data.target",
                lambda ds: adapt | {"data": {"source": "builtin:breast-cancer", "target": ds}},
            ),
        ):
            theirs = assert_problem(stranger.post("/v1/jobs", json=spec_with(owned.dataset)), 422)
            unknown = assert_problem(
                stranger.post("/v1/jobs", json=spec_with(UNKNOWN["dataset"])), 422
            )
            assert [e["field"] for e in theirs["errors"]] == [field], theirs
            assert _without_ids(theirs, owned.dataset) == _without_ids(unknown, UNKNOWN["dataset"])
    with session_scope() as session:
        assert session.get(Job, owned.job).status == "queued"
        assert session.get(Dataset, owned.dataset) is not None
        # The stranger's PATCH and DELETE left the model as it was.
        model = session.get(Model, owned.model)
        assert (model.name, model.tags, model.deleted_at) == ("imported", [], None)
        assert session.get(Sweep, owned.sweep).status == "running"  # the stranger's cancel
        assert session.get(Job, owned.fine_tuning_job).status == "queued"
        assert session.get(Dataset, owned.file) is not None
        # The stranger's PATCH, ping and DELETE left the webhook as it was, with one delivery.
        assert session.get(WebhookEndpoint, owned.webhook).events == ["job.failed"]
        deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == owned.webhook)
        assert session.scalars(deliveries).all() == [owned.delivery]
        # The stranger's version, alias move and alias deletion left the name as it was.
        registered = session.scalar(
            select(RegisteredModel).where(RegisteredModel.name == owned.name)
        )
        versions = select(ModelVersion.model_id).where(
            ModelVersion.registered_model_id == registered.id
        )
        assert list(session.scalars(versions)) == [owned.model]
        moves = select(AliasMove.alias, AliasMove.from_version, AliasMove.to_version).where(
            AliasMove.registered_model_id == registered.id
        )
        assert session.execute(moves).all() == [(owned.alias, None, 1)]


def test_the_owner_reaches_everything_it_made(app, owned):
    ids = owned.ids
    with client_for(app, owned.owner) as client:
        for path, id_ in (("/v1/jobs", owned.job), ("/v1/datasets", owned.dataset),
                          ("/v1/models", owned.model), ("/v1/sweeps", owned.sweep),
                          ("/v1/files", owned.file), ("/v1/webhooks", owned.webhook),
                          ("/v1/fine_tuning/jobs", owned.fine_tuning_job)):  # fmt: skip
            assert id_ in [item["id"] for item in client.get(path).json()["data"]]
        for method, template, kwargs in ID_ROUTES:
            response = _send(client, method, template, kwargs, ids)
            assert response.is_success, (method, template, response.text)
    assert re.fullmatch(r"job_[0-9a-f]{32}", owned.job)  # 122 random bits: not guessable


def test_a_revoked_key_stops_working_within_seconds(app):
    key = new_tenant()
    with client_for(app, key) as client:
        assert client.get("/v1/jobs").status_code == 200
        with session_scope() as session:
            tenants.revoke_key(session, tenants.list_keys(session, _tenant_name(key))[0].id)
        started = time.monotonic()
        while client.get("/v1/jobs").status_code == 200:
            assert time.monotonic() - started < 5, "the revoked key still works"
            time.sleep(0.1)
        assert_problem(client.get("/v1/jobs"), 401)


def test_a_read_only_key_reads_and_predicts_but_changes_nothing(app, owned):
    with session_scope() as session:
        _key, secret = tenants.create_key(session, _tenant_name(owned.owner), read_only=True)
    reader = Key(owned.owner.tenant_id, secret)
    with client_for(app, reader) as client:
        assert client.get("/v1/jobs").status_code == 200
        assert client.get(f"/v1/models/{owned.model}").status_code == 200
        assert client.post(f"/v1/models/{owned.model}/predict", **PREDICT).status_code == 200
        scored = {"json": {"dataset": owned.images}}
        assert client.post(f"/v1/models/{owned.model}/transferability", **scored).status_code == 200
        ranked = client.post(f"/v1/datasets/{owned.images}/rank-models", json={})
        assert [entry["model_id"] for entry in ranked.json()["ranking"]] == [owned.model]
        for version in (f"{owned.name}@{owned.alias}", f"{owned.name}/versions/1"):
            assert client.post(f"/v1/models/{version}/predict", **PREDICT).status_code == 200
        versions = f"/v1/registered-models/{owned.name}/versions"
        alias = f"/v1/registered-models/{owned.name}/aliases/{owned.alias}"
        for method, path, kwargs in [
            ("POST", versions, {"json": {"model_id": owned.lm}}),
            ("PUT", alias, {"json": {"version": 1}}),
            ("DELETE", alias, {}),
            ("POST", "/v1/jobs", {"json": DIGITS_CNN}),
            ("PATCH", f"/v1/models/{owned.model}", {"json": {"name": "x"}}),
            ("DELETE", f"/v1/models/{owned.model}", {}),
            ("POST", "/v1/models/import", {"files": {"file": ("m.safetensors", b"x")}}),
            ("POST", "/v1/webhooks", {"json": {"url": WEBHOOK_URL, "events": ["job.failed"]}}),
            ("POST", f"/v1/webhooks/{owned.webhook}/ping", {}),
        ]:
            assert (
                "read-only" in assert_problem(client.request(method, path, **kwargs), 403)["detail"]
            )


def _job_count(tenant_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).where(Job.tenant_id == tenant_id))


def test_submissions_past_the_queued_jobs_quota_are_refused_before_queueing(app):
    key = new_tenant(max_queued_jobs=2)
    with client_for(app, key) as client:
        assert [client.post("/v1/jobs", json=DIGITS_CNN).status_code for _ in range(2)] == [201] * 2
        refused = client.post("/v1/jobs", json=DIGITS_CNN)
        assert "2 jobs are queued" in assert_problem(refused, 429)["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        assert _job_count(key.tenant_id) == 2
        client.post(f"/v1/jobs/{client.get('/v1/jobs').json()['data'][0]['id']}/cancel")
        assert client.post("/v1/jobs", json=DIGITS_CNN).status_code == 201


def test_uploads_past_the_storage_quota_are_refused_and_nothing_is_kept(app):
    content = files.cancer_csv()
    key = new_tenant(max_storage_bytes=len(content) + 100)
    upload = {
        "files": {"file": ("cancer.csv", content)},
        "data": {"name": "cancer", "task": "classification", "label_column": "label"},
    }
    with client_for(app, key) as client:
        assert client.post("/v1/datasets", **upload).status_code == 201
        problem = assert_problem(client.post("/v1/datasets", **upload), 403)
        assert problem["errors"][0]["field"] == "file" and "storage quota" in problem["detail"]
        assert len(client.get("/v1/datasets").json()["data"]) == 1
        model = assert_problem(import_model(client, weights(network())), 403)
        assert "storage quota" in model["detail"]
        assert client.get("/v1/models").json()["data"] == []


def test_requests_past_the_rate_limit_get_429_with_retry_after(app):
    key = new_tenant(requests_per_minute=5)
    other = new_tenant()
    with client_for(app, key) as client, client_for(app, other) as neighbour:
        assert [client.get("/v1/jobs").status_code for _ in range(5)] == [200] * 5
        limited = client.get("/v1/jobs")
        assert "rate limit" in assert_problem(limited, 429)["detail"]
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert neighbour.get("/v1/jobs").status_code == 200  # one tenant's rate is its own


def test_security_headers_and_no_cors_by_default(app):
    with client_for(app, new_tenant()) as client:
        response = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in response.headers
        preflight = client.options(
            "/v1/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers
        assert client.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"


def test_a_task_message_carries_the_job_id_and_nothing_else(app):
    broker = redis.Redis.from_url(os.environ["TUNERY_BROKER_URL"])
    queue = os.environ["TUNERY_QUEUE"]
    broker.delete(queue)
    key = new_tenant()
    with client_for(app, key) as client:
        job = client.post("/v1/jobs", json=DIGITS_CNN).json()
    (raw,) = broker.lrange(queue, 0, -1)
    broker.delete(queue)
    args, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert (args, kwargs) == ([job["id"]], {})
    assert key.secret.encode() not in raw and b"builtin:digits" not in raw
