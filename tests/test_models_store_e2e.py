"""Models on an S3-protocol store (a moto server): trained by a worker on one "machine", served
by an API on another, fine-tuned by a worker on a third. Each machine has its own
`TUNERY_ARTIFACT_DIR`, `TUNERY_RUN_DIR` and `TUNERY_CACHE_DIR`, and they share nothing but the
database, the broker and the bucket."""

import hashlib
import os
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest

from app.storage import ChecksumMismatch, LocalStore, S3Store
from tests.stack import postgres_redis_stack
from tests.test_e2e import finished, wait_for
from tests.test_heads_api import onnx_in_clean_process
from tests.test_registry import CARD, import_model, network, weights
from tests.test_uploads_e2e import AWS, s3  # noqa: F401 (fixture)
from trainer.data import load_dataset

pytestmark = pytest.mark.e2e

TABULAR = {
    "kind": "finetune",
    "model": {"architecture": "mlp", "params": {"hidden": [16]}},
    "data": {"train": "builtin:breast-cancer"},
    "hyperparameters": {"epochs": 2, "batch_size": 64},
}


def _machine(root: Path, name: str) -> dict[str, str]:
    """The directories of a machine of its own: nothing in them is shared."""
    return {
        f"TUNERY_{what.upper()}_DIR": str(root / name / what)
        for what in ("artifact", "run", "cache")
    }


def _files(directory: str) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def stack(s3, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """An API on a machine of its own; its stack's worker, which shares its directories, is
    stopped before any job: each test starts workers on other machines."""
    endpoint, bucket, _client = s3
    root = tmp_path_factory.mktemp("models-store")
    env = {
        **AWS,
        "TUNERY_ARTIFACT_STORE_URL": f"s3://{bucket}/tunery",
        "TUNERY_S3_ENDPOINT_URL": endpoint,
        **_machine(root, "api"),
    }
    with postgres_redis_stack(root, "models-store", extra_env=env) as stack:
        worker = stack.processes[1]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        yield stack


def _stores(s3, tmp_path) -> list:  # noqa: F811
    endpoint, bucket, _client = s3
    os.environ.update(AWS)
    return [
        LocalStore(tmp_path / "local"),
        S3Store(f"s3://{bucket}/unit-{uuid.uuid4().hex[:8]}", tmp_path / "cache", endpoint),
    ]


def test_a_stored_model_key_is_never_replaced_and_is_checked_when_fetched(s3, tmp_path):  # noqa: F811
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first" * 1000)
    second.write_bytes(b"second" * 1000)
    sha256 = hashlib.sha256(first.read_bytes()).hexdigest()
    for store in _stores(s3, tmp_path):
        with pytest.raises(FileNotFoundError):
            store.local_path("models/m1/model.onnx")
        assert store.put_new("models/m1/model.onnx", first)
        assert not store.put_new("models/m1/model.onnx", second)  # the first stays
        assert store.local_path("models/m1/model.onnx", sha256).read_bytes() == first.read_bytes()
        store.put_new("models/m1/hf.zip", second)
        store.put_new("models/m10/model.onnx", second)  # a sibling whose id extends m1's
        if store.remote:  # a copy that is not what was recorded is refused, and not cached
            with pytest.raises(ChecksumMismatch):
                store.local_path("models/m10/model.onnx", sha256)
            assert not (store.cache_dir / "models/m10/model.onnx").exists()
        store.delete_tree("models/m1")
        assert not store.exists("models/m1/model.onnx")
        assert not store.exists("models/m1/hf.zip")
        assert store.exists("models/m10/model.onnx")
        with pytest.raises(FileNotFoundError):  # this machine's cached copy went too
            store.local_path("models/m1/model.onnx")


def test_a_model_trained_on_one_machine_is_served_and_fine_tuned_on_others(stack, s3, tmp_path):  # noqa: F811
    _endpoint, bucket, client = s3
    api_env = {k: stack.env[k] for k in _machine(stack.root, "api")}
    trainer = stack.start_worker(extra_env=_machine(stack.root, "trainer"))
    with stack.client() as api:
        job = api.post("/v1/jobs", json=TABULAR).json()
        job = wait_for(api, job["id"], finished, timeout=300)
        assert job["status"] == "succeeded", (job, stack.logs())
        os.killpg(trainer.pid, signal.SIGKILL)  # that machine is gone
        trainer.wait()
        model = api.get(f"/v1/models/{job['result_model_id']}").json()
        key = f"tunery/models/{model['id']}/model.safetensors"
        stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == model["sha256"]
        assert _files(api_env["TUNERY_CACHE_DIR"]) == []
        assert _files(api_env["TUNERY_ARTIFACT_DIR"]) == []

        # Served by the API, from its cache, filled from the bucket.
        rows = load_dataset("builtin:breast-cancer").splits["test"].x[:4].tolist()
        predicted = api.post(f"/v1/models/{model['id']}/predict", json={"inputs": rows})
        assert predicted.status_code == 200, (predicted.text, stack.logs())
        cached = Path(api_env["TUNERY_CACHE_DIR"]) / "models" / model["id"] / "model.safetensors"
        assert cached.read_bytes() == stored
        download = api.get(f"/v1/models/{model['id']}/download")
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == model["sha256"]
        assert download.headers["etag"] == f'"{model["sha256"]}"'
        onnx = onnx_in_clean_process(api, model["id"], rows, tmp_path)
        probabilities = predicted.json()["probabilities"]
        np.testing.assert_allclose(onnx, probabilities, rtol=1e-4, atol=1e-5)
        export = f"tunery/models/{model['id']}/model.onnx"
        exported = client.get_object(Bucket=bucket, Key=export)["Body"].read()
        again = api.get(f"/v1/models/{model['id']}/download", params={"format": "onnx"})
        assert again.content == exported
        assert again.headers["etag"] == f'"{hashlib.sha256(exported).hexdigest()}"'
        assert _files(api_env["TUNERY_ARTIFACT_DIR"]) == []

        # Fine-tuned by a worker on a third machine, which fetches the base from the bucket.
        third = _machine(stack.root, "finetuner")
        stack.start_worker(extra_env=third)
        spec = {**TABULAR, "model": None, "base_model_id": model["id"]}
        spec["hyperparameters"] = {"epochs": 1, "batch_size": 64}
        tuned_job = wait_for(api, api.post("/v1/jobs", json=spec).json()["id"], finished, 300)
        assert tuned_job["status"] == "succeeded", (tuned_job, stack.logs())
        fetched = Path(third["TUNERY_CACHE_DIR"]) / "models" / model["id"] / "model.safetensors"
        assert fetched.read_bytes() == stored
        tuned = api.get(f"/v1/models/{tuned_job['result_model_id']}").json()
        assert tuned["parent_model_id"] == model["id"]
        tuned_key = f"tunery/models/{tuned['id']}/model.safetensors"
        tuned_bytes = client.get_object(Bucket=bucket, Key=tuned_key)["Body"].read()
        assert hashlib.sha256(tuned_bytes).hexdigest() == tuned["sha256"]
        assert _files(third["TUNERY_ARTIFACT_DIR"]) == []

        # Deleting a model deletes its objects, and the API's cached copies.
        assert api.delete(f"/v1/models/{model['id']}").status_code == 204
        prefix = f"tunery/models/{model['id']}/"
        assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert not cached.parent.exists()
        assert "Contents" in client.list_objects_v2(Bucket=bucket, Prefix=tuned_key)


def test_an_imported_model_is_stored_in_the_bucket(stack, s3):  # noqa: F811
    _endpoint, bucket, client = s3
    content = weights(network())
    with stack.client() as api:
        response = import_model(api, content)
        assert response.status_code == 201, response.text
        model = response.json()
        key = f"tunery/models/{model['id']}/model.safetensors"
        stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == model["sha256"]
        inputs = np.zeros((2, *CARD["input_shape"])).tolist()
        predicted = api.post(f"/v1/models/{model['id']}/predict", json={"inputs": inputs})
        assert predicted.status_code == 200, predicted.text
