"""GET /v1/spec-catalog in-process: what the job spec's schema leaves open (each architecture's
and method's params), as the dashboard's form reads it, beside the spec's schema in
/openapi.json."""

import pytest
from fastapi.testclient import TestClient

from trainer.architectures import ARCHITECTURES
from trainer.data import BUILTIN_DATASETS
from trainer.methods import METHODS


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


def test_the_catalog_lists_every_architecture_and_method_with_its_params_schema(client):
    response = client.get("/v1/spec-catalog")
    assert response.status_code == 200, response.text
    catalog = response.json()
    architectures = {a["name"]: a for a in catalog["architectures"]}
    assert set(architectures) == set(ARCHITECTURES)
    cnn = architectures["cnn"]
    assert cnn["params_schema"] == ARCHITECTURES["cnn"].params.model_json_schema()
    assert cnn["params_schema"]["properties"]["hidden"]["default"] == 64
    assert cnn["modalities"] == ["audio", "image"] and not cnn["pretrained"]
    hf_encoder = architectures["hf_encoder"]
    assert hf_encoder["pretrained"] and hf_encoder["supports_lora"]

    methods = {m["name"]: m for m in catalog["methods"]}
    assert set(methods) == set(METHODS)
    assert {name for name, m in methods.items() if m["kind"] == "pretrain"} == {
        name for name, m in METHODS.items() if m.kind == "pretrain"
    }
    assert methods["dann"]["params_schema"] == METHODS["dann"].params.model_json_schema()
    assert methods["contrastive"]["validation_metrics"] == ["loss"]
    assert catalog["builtin_datasets"] == sorted(BUILTIN_DATASETS)


def test_the_job_spec_schema_shows_the_default_method_of_a_finetune(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    method = schemas["FinetuneSpec"]["properties"]["method"]
    assert method["default"] == {"name": "supervised", "params": {}}
