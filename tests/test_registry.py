"""The model registry in-process on Postgres: import, naming and tags, deletion, exports,
predict validation and micro-batching. Models come in through the import route."""

import io
import json
import pickle
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors
from torch import nn

from app.api.models import NPY
from tests.servers import archive_server
from tests.test_api import assert_problem
from trainer.architectures import Network, build_trunk
from trainer.heads.regression import RegressionHead

CARD = {
    "architecture": "cnn",
    "params": {"channels": [8, 16], "hidden": 32},
    "task": "classification",
    "input_shape": [1, 8, 8],
    "labels": ["no", "yes"],
    "normalization": {"mean": [4.0], "std": [5.0]},
}


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


def network(card: dict = CARD) -> Network:
    torch.manual_seed(0)
    normalize, backbone = build_trunk(
        card["architecture"], card["params"], card["input_shape"], card["normalization"]
    )
    return Network(normalize, backbone, nn.Linear(backbone.feature_dim, len(card["labels"])))


def weights(model: nn.Module, drop: str | None = None) -> bytes:
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != drop}
    return save_safetensors(state)


def import_model(client, content: bytes, card: dict | None = CARD, filename="m.safetensors"):
    data = {"name": "imported"} | ({"card": json.dumps(card)} if card is not None else {})
    return client.post("/v1/models/import", files={"file": (filename, content)}, data=data)


def test_an_imported_model_predicts_as_its_network_does(client):
    net = network()
    response = import_model(client, weights(net))
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["architecture"], model["labels"], model["source_job_id"]) == (
        "cnn",
        ["no", "yes"],
        None,
    )
    inputs = torch.rand(5, 1, 8, 8) * 16
    answer = client.post(
        f"/v1/models/{model['id']}/predict",
        json={"inputs": inputs.tolist(), "return_embeddings": True},
    ).json()
    with torch.no_grad():
        expected = torch.softmax(net(inputs), dim=1)
    assert torch.allclose(torch.tensor(answer["probabilities"]), expected, atol=1e-5)
    assert len(answer["embeddings"][0]) == 32


def test_an_imported_regressor_predicts_in_its_targets_units_and_a_tagger_tags(client):
    card = {"architecture": "mlp", "params": {"hidden": [16]}, "task": "regression",
            "input_shape": [3], "targets": ["price", "risk"],
            "target_scaling": {"mean": [100.0, 0.0], "std": [10.0, 1.0]}}  # fmt: skip
    torch.manual_seed(0)
    _normalize, backbone = build_trunk("mlp", card["params"], [3], None)
    head = RegressionHead(backbone.feature_dim, card["targets"], [100.0, 0.0], [10.0, 1.0])
    net = Network(nn.Identity(), backbone, head).eval()
    response = import_model(client, weights(net), card)
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["task"], model["targets"]) == ("regression", ["price", "risk"])
    inputs = torch.rand(4, 3)
    answer = client.post(f"/v1/models/{model['id']}/predict", json={"inputs": inputs.tolist()})
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        expected = net(inputs)
    assert torch.allclose(torch.tensor(answer.json()["values"]), expected, atol=1e-4)
    assert 50 < expected[:, 0].mean() < 150  # in the price's units, not standardised
    # The head is the task's: a classifier's weights do not fit a regressor's card.
    classifier = Network(nn.Identity(), backbone, nn.Linear(backbone.feature_dim, 2))
    error = assert_problem(import_model(client, weights(classifier), card), 422)
    assert "missing weights: head.linear.weight" in error["errors"][0]["message"], error
    for wrong, phrase in (({"targets": None}, "needs `targets`"),
                          ({"task": "ranking"}, "unknown task 'ranking'")):  # fmt: skip
        error = assert_problem(import_model(client, weights(net), card | wrong), 422)
        assert phrase in error["errors"][0]["message"], error


class RunsCode:
    """A pickle payload: unpickling it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_are_refused_and_never_run(client, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": RunsCode(marker)})
    torch_save = io.BytesIO()
    torch.save(network().state_dict(), torch_save)
    for filename, content in [
        ("model.pt", torch_save.getvalue()),
        ("model.bin", payload),
        ("renamed.safetensors", payload),  # the name lies; the content is a pickle
        ("renamed2.safetensors", torch_save.getvalue()),
    ]:
        error = assert_problem(import_model(client, content, filename=filename), 422)
        assert error["errors"][0]["field"] == "file"
        assert "pickle" in error["errors"][0]["message"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("card", "drop", "field", "phrase"),
    [
        ({**CARD, "architecture": "vgg"}, None, "card", "unknown architecture"),
        ({**CARD, "labels": ["one"]}, None, "card", "at least two"),
        ({**CARD, "params": {"channels": [8], "hidden": 32}}, None, "file", "do not fit"),
        (CARD, "head.weight", "file", "missing weights: head.weight"),
        (None, None, "card", "give a model card"),
    ],
)
def test_imports_that_do_not_fit_are_422(client, card, drop, field, phrase):
    error = assert_problem(import_model(client, weights(network(), drop), card), 422)["errors"]
    assert error[0]["field"].startswith(field) and phrase in error[0]["message"], error


def test_not_safetensors_is_422(client):
    error = assert_problem(import_model(client, b"{not weights at all}"), 422)["errors"][0]
    assert error["field"] == "file" and "not a safetensors file" in error["message"]


def test_an_npy_batch_predicts_as_json_does_and_is_never_unpickled(client):
    model = import_model(client, weights(network())).json()
    url = f"/v1/models/{model['id']}/predict"
    inputs = (torch.rand(4, 1, 8, 8) * 16).numpy()
    body = io.BytesIO()
    np.save(body, inputs)
    npy = client.post(url, content=body.getvalue(), headers={"content-type": NPY})
    assert npy.status_code == 200, npy.text
    assert npy.json() == client.post(url, json={"inputs": inputs.tolist()}).json()
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused = client.post(url, content=pickled.getvalue(), headers={"content-type": NPY})
    assert assert_problem(refused, 422)["errors"][0]["field"] == "body"


def test_predict_validates_inputs_against_the_model(client):
    model = import_model(client, weights(network())).json()
    url = f"/v1/models/{model['id']}/predict"
    for inputs, phrase in [
        ([[[0.0] * 8] * 8], "has shape [1, 8, 8]; this model takes [1, 1, 8, 8]"),
        (["a picture"], "must be numbers"),
        ([[[[0.0] * 8] * 8]] * 2 + [[[[0.0] * 7] * 8]], "must be numbers"),
    ]:
        error = assert_problem(client.post(url, json={"inputs": inputs}), 422)["errors"][0]
        assert error["field"] == "inputs" and phrase in error["message"], error
    empty = assert_problem(client.post(url, json={"inputs": []}), 422)
    assert empty["errors"][0]["field"] == "inputs"


def test_name_tags_descendants_and_deletion(client):
    model = import_model(client, weights(network())).json()
    url = f"/v1/models/{model['id']}"
    renamed = client.patch(url, json={"name": "digits-base", "tags": ["prod", "v1", "prod"]})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["tags"]) == ("digits-base", ["prod", "v1"])
    assert assert_problem(client.patch(url, json={"tags": ["no spaces"]}), 422)
    spec = {"kind": "finetune", "base_model_id": model["id"], "data": {"train": "builtin:digits"}}
    refused = assert_problem(client.post("/v1/jobs", json=spec), 422)  # 28x28 vs 8x8
    assert refused["errors"][0]["field"] == "base_model_id"
    # A queued job starting from the model pins it.
    upload = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", _digits_8x8())},
        data={"name": "d", "task": "classification"},
    ).json()
    spec["data"] = {"train": upload["id"]}
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    assert job.json()["id"] in assert_problem(client.delete(url), 409)["detail"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel")
    assert client.delete(url).status_code == 204
    assert_problem(client.get(url), 404)
    assert_problem(client.post("/v1/jobs", json=spec), 422)  # a deleted base
    assert model["id"] not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def _digits_8x8() -> bytes:
    from tests.files import digits_npz

    return digits_npz(100)


def test_the_archive_serves_the_model_with_onnxruntime_alone(client, tmp_path):
    model = import_model(client, weights(network())).json()
    url = f"/v1/models/{model['id']}/download"
    archive = client.get(url, params={"format": "archive"})
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert set(z.namelist()) == {
            "model.safetensors",
            "model.onnx",
            "model_card.json",
            "serve.py",
        }
    again = client.get(url, params={"format": "archive"}, headers={"Range": "bytes=10-19"})
    assert again.status_code == 206 and again.content == archive.content[10:20]
    assert again.headers["etag"] == archive.headers["etag"]
    with archive_server(archive.content, tmp_path) as served_url:
        inputs = (torch.rand(3, 1, 8, 8) * 16).tolist()
        served = httpx.post(f"{served_url}/predict", json={"inputs": inputs})
        assert served.status_code == 200, served.text
        ours = client.post(f"/v1/models/{model['id']}/predict", json={"inputs": inputs}).json()
        assert served.json()["predictions"] == ours["predictions"]
        difference = (
            torch.tensor(served.json()["probabilities"]) - torch.tensor(ours["probabilities"])
        ).abs()
        assert difference.max() <= 1e-4


def test_concurrent_requests_run_as_one_batch_with_each_answer_its_own():
    from app.services.inference import MicroBatcher
    from trainer.heads import HEADS

    net = network().eval()
    calls: list[int] = []

    class Counted(nn.Module):  # records the batch size of each forward pass
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def outputs_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            calls.append(len(x))
            time.sleep(0.05)  # a busy model: requests queue meanwhile
            return self.inner.outputs_and_features(x)

    batcher = MicroBatcher(Counted(), HEADS["classification"].serve)
    requests = [torch.rand(i + 1, 1, 8, 8) * 16 for i in range(12)]
    answers: dict[int, torch.Tensor] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: answers.__setitem__(i, batcher.submit(requests[i]).result()[0])
        )
        for i in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sum(calls) == sum(len(r) for r in requests) and len(calls) < 12
    with torch.no_grad():
        for i, x in enumerate(requests):
            assert torch.allclose(answers[i], torch.softmax(net(x), dim=1), atol=1e-6)
