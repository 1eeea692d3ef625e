"""Registered models against a running API server and worker on Postgres: versions registered
by hand and by jobs (`register_as`), aliases that move and keep their history, model references
(`name@alias`, `name/versions/N`) wherever a model id is taken, deletion guarded by aliases,
bad input, and tenancy.

(`tests/test_registry.py` is the older model registry: import, naming, tags, exports.)"""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from sqlalchemy import create_engine, select

from app.models import ApiKey
from app.services.auth import secret_sha256
from tests.stack import postgres_redis_stack
from tests.test_api import assert_problem
from tests.test_cli import TUNERY
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for
from tests.test_registry import import_model, network, weights
from tests.tiny_lm import save_tiny_causal_lm
from tunery import Client, NotFound

pytestmark = pytest.mark.e2e

INPUTS = {"inputs": torch.rand(3, 1, 8, 8).tolist()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    llama = save_tiny_causal_lm(root / "tiny-llama", "llama")
    extra = {"TUNERY_HF_MODEL_DIRS": json.dumps({"tiny-llama": str(llama)})}
    with postgres_redis_stack(root, "registry", extra_env=extra) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack):
    with stack.client() as client:
        yield client


def key_id(stack, secret: str) -> str:
    engine = create_engine(stack.env["TUNERY_DATABASE_URL"])
    with engine.connect() as connection:
        found = connection.scalar(
            select(ApiKey.id).where(ApiKey.secret_sha256 == secret_sha256(secret))
        )
    engine.dispose()
    return found


def answering(client, label: str) -> str:
    """A model imported with weights that predict `label` ("no" or "yes") for any input."""
    net = network()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([5.0, -5.0] if label == "no" else [-5.0, 5.0]))
    response = import_model(client, weights(net))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def register(client, name: str, model_id: str) -> dict:
    response = client.post(f"/v1/registered-models/{name}/versions", json={"model_id": model_id})
    assert response.status_code == 201, response.text
    return response.json()


def set_alias(client, name: str, alias: str, version: int) -> dict:
    response = client.put(
        f"/v1/registered-models/{name}/aliases/{alias}", json={"version": version}
    )
    assert response.status_code == 200, response.text
    return response.json()


def predictions(client, reference: str) -> list[str]:
    response = client.post(f"/v1/models/{reference}/predict", json=INPUTS)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_versions_count_up_and_an_alias_moves_with_its_history_kept(stack, client):
    no, yes = answering(client, "no"), answering(client, "yes")
    first = register(client, "churn", no)
    assert (first["version"], first["model_id"], first["deleted"]) == (1, no, False)
    assert first["registered_by_key_id"] == key_id(stack, stack.key)
    assert first["registered_by_job_id"] is None
    assert register(client, "churn", yes)["version"] == 2
    again = client.post("/v1/registered-models/churn/versions", json={"model_id": no})
    assert "version 1 of 'churn'" in assert_problem(again, 409)["detail"]

    made = set_alias(client, "churn", "production", 1)
    assert (made["alias"], made["version"], made["model_id"]) == ("production", 1, no)
    assert predictions(client, "churn@production") == ["no"] * 3
    assert predictions(client, "churn/versions/2") == ["yes"] * 3
    assert client.get("/v1/models/churn@production").json()["id"] == no
    assert client.get("/v1/models/churn%2Fversions%2F2").json()["id"] == yes  # encoded, too
    download = client.get("/v1/models/churn/versions/1/download")
    assert download.status_code == 200
    assert download.headers["ETag"] == f'"{client.get(f"/v1/models/{no}").json()["sha256"]}"'

    set_alias(client, "churn", "production", 2)  # served by alias a moment ago: moved at once
    assert predictions(client, "churn@production") == ["yes"] * 3
    set_alias(client, "churn", "production", 2)  # no move: not in the history
    set_alias(client, "churn", "staging", 1)
    assert client.delete("/v1/registered-models/churn/aliases/staging").status_code == 204
    assert_problem(client.get("/v1/models/churn@staging"), 404)

    churn = client.get("/v1/registered-models/churn").json()
    assert (churn["name"], churn["latest_version"]) == ("churn", 2)
    assert [(a["alias"], a["version"], a["model_id"]) for a in churn["aliases"]] == [
        ("production", 2, yes)
    ]
    assert [(v["version"], v["model_id"], v["aliases"]) for v in churn["versions"]] == [
        (1, no, []),
        (2, yes, ["production"]),
    ]
    history = [(m["alias"], m["from_version"], m["to_version"]) for m in churn["alias_history"]]
    assert history == [
        ("production", None, 1),
        ("production", 1, 2),
        ("staging", None, 1),
        ("staging", 1, None),
    ]
    assert {m["key_id"] for m in churn["alias_history"]} == {first["registered_by_key_id"]}
    listed = client.get("/v1/registered-models").json()["data"]
    assert {r["name"]: r["latest_version"] for r in listed}["churn"] == 2


def test_a_model_an_alias_points_at_is_not_deleted_and_numbers_are_never_reused(client):
    kept, dropped = answering(client, "no"), answering(client, "yes")
    register(client, "fraud", kept)
    register(client, "fraud", dropped)
    set_alias(client, "fraud", "production", 1)
    for reference in (kept, "fraud@production", "fraud/versions/1"):
        refused = assert_problem(client.delete(f"/v1/models/{reference}"), 409)
        assert "fraud@production" in refused["detail"], refused
    assert client.get(f"/v1/models/{kept}").status_code == 200

    # A version no alias points at may go: its model is deleted, its number stays taken.
    assert client.delete("/v1/models/fraud/versions/2").status_code == 204
    assert_problem(client.get("/v1/models/fraud/versions/2"), 404)
    assert_problem(client.get(f"/v1/models/{dropped}"), 404)
    versions = client.get("/v1/registered-models/fraud").json()["versions"]
    assert [(v["version"], v["deleted"]) for v in versions] == [(1, False), (2, True)]
    moved = client.put("/v1/registered-models/fraud/aliases/production", json={"version": 2})
    assert assert_problem(moved, 422)["errors"][0]["field"] == "version"
    assert register(client, "fraud", answering(client, "yes"))["version"] == 3

    # Once the alias is gone, its model may be deleted too.
    assert client.delete("/v1/registered-models/fraud/aliases/production").status_code == 204
    assert client.delete("/v1/models/fraud@production").status_code == 404
    assert client.delete("/v1/models/fraud/versions/1").status_code == 204


def test_concurrent_registrations_take_distinct_numbers(client):
    models = [answering(client, "no") for _ in range(6)]
    with ThreadPoolExecutor(len(models)) as pool:
        versions = list(pool.map(lambda m: register(client, "raced", m), models))
    assert sorted(v["version"] for v in versions) == list(range(1, 7))
    assert {v["model_id"] for v in versions} == set(models)


def test_bad_input_is_refused_naming_the_field(client):
    model = answering(client, "no")
    register(client, "valid", model)

    def field(response, status: int = 422) -> str:
        return assert_problem(response, status)["errors"][0]["field"]

    assert (
        field(client.post("/v1/registered-models/Not-A-Slug/versions", json={"model_id": model}))
        == "name"
    )
    assert (
        field(client.put("/v1/registered-models/valid/aliases/Prod!", json={"version": 1}))
        == "alias"
    )
    assert (
        field(client.put("/v1/registered-models/valid/aliases/-x", json={"version": 1})) == "alias"
    )
    assert (
        field(client.put("/v1/registered-models/valid/aliases/prod", json={"version": 0}))
        == "version"
    )
    assert (
        field(client.put("/v1/registered-models/valid/aliases/prod", json={"version": 9}))
        == "version"
    )
    assert field(client.put("/v1/registered-models/valid/aliases/prod", json={})) == "version"
    extra = {"model_id": model, "alias": "x"}
    assert field(client.post("/v1/registered-models/valid/versions", json=extra)) == "alias"
    assert field(client.post("/v1/jobs", json=DIGITS_CNN | {"register_as": "My Model"})) == (
        "register_as"
    )
    base = {
        "kind": "finetune",
        "base_model_id": "valid@nowhere",
        "data": {"train": "builtin:digits"},
    }
    problem = assert_problem(client.post("/v1/jobs", json=base), 422)
    assert [e["field"] for e in problem["errors"]] == ["base_model_id"]
    assert "valid@nowhere" in problem["detail"]

    assert_problem(client.get("/v1/registered-models/unknown"), 404)
    assert_problem(client.put("/v1/registered-models/unknown/aliases/a", json={"version": 1}), 404)
    assert_problem(client.delete("/v1/registered-models/valid/aliases/never-made"), 404)
    unknown_model = client.post(
        "/v1/registered-models/valid/versions", json={"model_id": "model_x"}
    )
    assert "model_x" in assert_problem(unknown_model, 404)["detail"]
    for reference in ("valid/versions/2", "valid@none", "valid/versions/0", "valid/other/1"):
        assert_problem(client.get(f"/v1/models/{reference}"), 404)
        assert_problem(client.post(f"/v1/models/{reference}/predict", json=INPUTS), 404)


def test_another_tenants_names_and_references_answer_as_unknown_ones_do(stack, client):
    mine = answering(client, "no")
    register(client, "shared-name", mine)
    set_alias(client, "shared-name", "production", 1)
    with stack.client(stack.new_key()) as stranger:
        for theirs, unknown in (
            ("/v1/registered-models/shared-name", "/v1/registered-models/no-such-name"),
            ("/v1/models/shared-name@production", "/v1/models/no-such-name@production"),
            ("/v1/models/shared-name/versions/1", "/v1/models/no-such-name/versions/1"),
        ):
            a, b = stranger.get(theirs), stranger.get(unknown)
            assert a.status_code == b.status_code == 404
            assert a.json()["detail"].replace("shared-name", "no-such-name") == b.json()["detail"]
        moved = stranger.put(
            "/v1/registered-models/shared-name/aliases/production", json={"version": 1}
        )
        assert_problem(moved, 404)
        assert_problem(stranger.delete("/v1/registered-models/shared-name/aliases/production"), 404)
        taken = stranger.post("/v1/registered-models/shared-name/versions", json={"model_id": mine})
        assert_problem(taken, 404)
        spec = DIGITS_CNN | {"model": None, "base_model_id": "shared-name@production"}
        errors = assert_problem(stranger.post("/v1/jobs", json=spec), 422)["errors"]
        assert [e["field"] for e in errors] == ["base_model_id"]
        assert stranger.get("/v1/registered-models").json()["data"] == []
        # Names are the tenant's own: the same name is another registered model there.
        own = answering(stranger, "yes")
        assert register(stranger, "shared-name", own)["version"] == 1
        assert predictions(stranger, "shared-name/versions/1") == ["yes"] * 3
    assert predictions(client, "shared-name/versions/1") == ["no"] * 3
    assert client.get("/v1/registered-models/shared-name").json()["latest_version"] == 1


def test_a_language_model_generates_and_chats_by_reference(client):
    lm = client.post("/v1/models/import", data={"hf_model": "tiny-llama"})
    assert lm.status_code == 201, lm.text
    register(client, "assistant", lm.json()["id"])
    set_alias(client, "assistant", "production", 1)
    generated = client.post(
        "/v1/models/assistant/versions/1/generate", json={"prompt": "the", "max_tokens": 2}
    )
    assert generated.status_code == 200, generated.text
    assert generated.json()["model"] == lm.json()["id"]
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "assistant@production",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["model"] == lm.json()["id"]
    unknown = client.post(
        "/v1/chat/completions",
        json={"model": "assistant@staging", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def job_events(client, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]]


def test_register_as_registers_a_jobs_model_and_a_base_named_by_alias_stays_put(client):
    one_epoch = {"hyperparameters": {"epochs": 1}, "register_as": "digits"}
    first = client.post("/v1/jobs", json=DIGITS_CNN | one_epoch)
    assert first.status_code == 201, first.text
    first = wait_for(client, first.json()["id"], finished)
    assert first["status"] == "succeeded", first
    (version,) = client.get("/v1/registered-models/digits").json()["versions"]
    assert (version["version"], version["model_id"]) == (1, first["result_model_id"])
    assert (version["registered_by_job_id"], version["registered_by_key_id"]) == (first["id"], None)
    assert "registered as digits/versions/1" in job_events(client, first["id"])
    set_alias(client, "digits", "production", 1)

    # The base is resolved as the job is submitted: moving the alias later changes nothing.
    spec = {
        "kind": "finetune",
        "base_model_id": "digits@production",
        "data": {"train": "builtin:digits"},
        **one_epoch,
    }
    second = client.post("/v1/jobs", json=spec)
    assert second.status_code == 201, second.text
    assert second.json()["spec"]["base_model_id"] == first["result_model_id"]
    assert f"base_model_id digits@production is model {first['result_model_id']}" in job_events(
        client, second.json()["id"]
    )
    second = wait_for(client, second.json()["id"], finished)
    assert second["status"] == "succeeded", second
    child = client.get("/v1/models/digits/versions/2").json()
    assert (child["id"], child["parent_model_id"]) == (
        second["result_model_id"],
        first["result_model_id"],
    )

    sweep = {
        "job": spec | {"register_as": None, "hyperparameters": {"epochs": 2}},
        "parameters": {
            "hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}
        },
        "sampler": {"name": "random", "seed": 0},
        "max_trials": 1,
    }
    registering = client.post("/v1/sweeps", json=sweep | {"job": spec})
    assert [e["field"] for e in assert_problem(registering, 422)["errors"]] == ["job.register_as"]
    made = client.post("/v1/sweeps", json=sweep)
    assert made.status_code == 201, made.text
    assert client.post(f"/v1/sweeps/{made.json()['id']}/cancel").status_code == 200
    assert made.json()["spec"]["job"]["base_model_id"] == first["result_model_id"]


def test_the_sdk_and_the_command_register_move_and_read(stack, client, tmp_path):
    first, second = answering(client, "no"), answering(client, "yes")
    with Client(stack.base_url, stack.key) as sdk:
        assert sdk.registered_models.register("sdk-model", first).version == 1
        assert sdk.registered_models.register("sdk-model", second).version == 2
        moved = sdk.registered_models.set_alias("sdk-model", "production", 2)
        assert (moved.version, moved.model_id) == (2, second)
        assert (
            sdk.models.predict("sdk-model@production", INPUTS["inputs"]).predictions == ["yes"] * 3
        )
        assert sdk.models.get("sdk-model/versions/1").id == first
        with pytest.raises(NotFound):
            sdk.registered_models.delete_alias("sdk-model", "staging")
        listed = {m.name: m for m in sdk.registered_models.list()}
        assert [(a.alias, a.version) for a in listed["sdk-model"].aliases] == [("production", 2)]

    env = {**stack.env, "TUNERY_URL": stack.base_url, "TUNERY_API_KEY": stack.key}

    def tunery(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TUNERY, *args], env=env, capture_output=True, text=True)

    aliased = tunery("registry", "alias", "sdk-model", "staging", "1", "--json")
    assert aliased.returncode == 0, aliased.stderr
    assert json.loads(aliased.stdout)["model_id"] == first
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(INPUTS))
    predicted = tunery("models", "predict", "sdk-model@staging", "-i", str(inputs), "--json")
    assert json.loads(predicted.stdout)["predictions"] == ["no"] * 3, predicted.stderr
    assert tunery("registry", "unalias", "sdk-model", "production").returncode == 0
    shown = json.loads(tunery("registry", "show", "sdk-model", "--json").stdout)
    moves = [(m["alias"], m["from_version"], m["to_version"]) for m in shown["alias_history"]]
    assert moves == [("production", None, 2), ("staging", None, 1), ("production", 2, None)]
    human = tunery("registry", "show", "sdk-model")
    assert "staging" in human.stdout and second in human.stdout, human.stderr
    listed = json.loads(tunery("registry", "list", "--json").stdout)
    assert "sdk-model" in [m["name"] for m in listed]
    refused = tunery("registry", "alias", "sdk-model", "Not-A-Slug", "1")
    assert refused.returncode == 1 and "alias:" in refused.stderr, refused.stderr
