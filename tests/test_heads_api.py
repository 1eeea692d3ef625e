"""A regression job through the service (embedded SQLite stack, a real worker): submitted on
`builtin:diabetes`, its figures on the job, its model's predict answering values in the
target's units, and its ONNX download answering the same in a clean onnxruntime process."""

import json
import subprocess
import sys
import uuid

import httpx
import numpy as np
import pytest

from tests.servers import archive_server
from tests.stack import start_stack
from tests.test_e2e import finished, wait_for
from trainer.data import load_dataset

pytestmark = pytest.mark.e2e

ONNX_IN_CLEAN_PROCESS = """
import json, sys
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1])
values, _ = session.run(None, {"inputs": np.asarray(json.loads(sys.argv[2]), dtype=np.float32)})
assert not any(name.split(".")[0] in ("app", "worker", "trainer") for name in sys.modules)
print(json.dumps(values.tolist()))
"""


def onnx_in_clean_process(client, model_id: str, inputs: list, tmp_path) -> np.ndarray:
    """The model's ONNX download run on `inputs` by onnxruntime in a process of its own,
    which imports nothing of tunery: its first output."""
    onnx = client.get(f"/v1/models/{model_id}/download", params={"format": "onnx"})
    assert onnx.status_code == 200, onnx.text
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx.content)
    done = subprocess.run(
        [sys.executable, "-c", ONNX_IN_CLEAN_PROCESS, str(path), json.dumps(inputs)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return np.asarray(json.loads(done.stdout))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    urls = (f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db")
    stack = start_stack(root, *urls, queue=f"tunery-heads-{uuid.uuid4().hex[:8]}")
    try:
        with stack.client() as client:
            yield client
    finally:
        stack.stop()


def test_a_regression_job_predicts_values_in_the_targets_units(client, tmp_path):
    spec = {
        "kind": "finetune",
        "model": {"architecture": "mlp", "params": {"hidden": [64], "dropout": 0.0}},
        "data": {"train": "builtin:diabetes"},
        "hyperparameters": {"epochs": 40, "batch_size": 32, "learning_rate": 3e-3},
    }
    submitted = client.post("/v1/jobs", json=spec)
    assert submitted.status_code == 201, submitted.text
    job = wait_for(client, submitted.json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert job["metrics"]["test_r2"] > 0.2 and "test_accuracy" not in job["metrics"]
    model_id = job["result_model_id"]
    model = client.get(f"/v1/models/{model_id}").json()
    assert model["task"] == "regression"

    rows = load_dataset("builtin:diabetes").splits["test"].x[:3].tolist()
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["targets"] == ["progression"] and body["predictions"] is None
    values = np.asarray(body["values"])
    assert values.shape == (3, 1) and (values > 25).all() and (values < 350).all()

    onnx_values = onnx_in_clean_process(client, model_id, rows, tmp_path)
    np.testing.assert_allclose(onnx_values, values, rtol=1e-4, atol=1e-3)


def test_a_classification_method_on_regression_data_is_refused(client):
    spec = {
        "kind": "adapt",
        "model": {"architecture": "mlp"},
        "method": {"name": "coral"},
        "data": {"source": "builtin:diabetes", "target": "builtin:diabetes"},
    }
    refused = client.post("/v1/jobs", json=spec)
    assert refused.status_code == 422, refused.text
    fields = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert "builtin:diabetes is regression data" in fields["data.source"]


def regression_table(path, rows: int = 300):
    """Two numeric targets of four features (one of them a category), with noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    colour = rng.choice(["red", "green"], size=rows)
    price = 100 + 20 * x[:, 0] - 10 * x[:, 1] + 15 * (colour == "red") + rng.normal(size=rows)
    risk = 0.5 * x[:, 2] + rng.normal(scale=0.1, size=rows)
    lines = ["a,b,c,colour,price,risk"]
    lines += [f"{a:.4f},{b:.4f},{c:.4f},{k},{p:.3f},{r:.4f}" for (a, b, c), k, p, r in
              zip(x, colour, price, risk, strict=True)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def upload(client, path, **data):
    with path.open("rb") as file:
        return client.post(
            "/v1/datasets", files={"file": (path.name, file)}, data={"name": path.stem, **data}
        )


def mlp_trained_on(client, dataset_id: str) -> dict:
    """The succeeded job of a small MLP fine-tuned on an uploaded table."""
    spec = {
        "kind": "finetune",
        "model": {"architecture": "mlp", "params": {"hidden": [32], "dropout": 0.0}},
        "data": {"train": dataset_id},
        "hyperparameters": {"epochs": 30, "batch_size": 32, "learning_rate": 3e-3},
    }
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
    assert job["status"] == "succeeded", job
    return job


def test_a_table_with_numeric_targets_uploads_trains_and_predicts_each(client, tmp_path):
    table = regression_table(tmp_path / "prices.csv")
    uploaded = upload(client, table, task="regression", label_column="price, risk")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert (dataset["task"], dataset["targets"], dataset["labels"]) == (
        "regression", ["price", "risk"], []
    )  # fmt: skip
    assert dataset["input_shape"] == [5]  # a, b, c and the colour one-hot
    job = mlp_trained_on(client, dataset["id"])
    metrics = job["metrics"]
    assert metrics["test_r2_price"] > 0.9 and metrics["test_r2_risk"] > 0.7, metrics
    model_id = job["result_model_id"]
    body = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0, 0, 0, 1, 0]]})
    assert body.status_code == 200, body.text
    assert body.json()["targets"] == ["price", "risk"]
    price, risk = body.json()["values"][0]
    assert 85 < price < 135 and -1 < risk < 1  # about 100 (+15 if the one-hot is red), 0

    # Rows as the table has them: by column name, the category as its text.
    columns = client.get(f"/v1/models/{model_id}").json()["columns"]
    assert columns[3] == {"name": "colour", "categories": ["green", "red"]}, columns
    rows = [{"a": 0, "b": 0, "c": 0, "colour": "green"}, {"colour": "red", "a": 0, "b": 0, "c": 0}]
    by_name = client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows})
    assert by_name.status_code == 200, by_name.text
    green, red = by_name.json()["values"]
    assert green == pytest.approx([price, risk], abs=1e-4) and 10 < red[0] - green[0] < 20
    for row, field, said in (
        ({"a": 0, "b": 0, "c": 0}, "inputs[0].colour", "missing"),
        (rows[0] | {"colour": "blue"}, "inputs[0].colour", "unknown category 'blue'"),
        (rows[0] | {"d": 1}, "inputs[0].d", "unknown column"),
        (rows[0] | {"a": "x"}, "inputs[0].a", "must be a finite number"),
    ):
        refused = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [row]})
        assert refused.status_code == 422, refused.text
        errors = {e["field"]: e["message"] for e in refused.json()["errors"]}
        assert said in errors[field], errors


@pytest.mark.parametrize(
    ("label_column", "field", "said"),
    [
        ("price, colour", "row 1, column 'colour'", "must be a number, not 'green'"),
        ("price, profit", "column 'profit'", "not found"),
    ],
)
def test_a_target_that_is_not_a_numeric_column_is_refused(client, tmp_path, label_column, field,
                                                          said):  # fmt: skip
    table = regression_table(tmp_path / "bad.csv", rows=20)
    refused = upload(client, table, task="regression", label_column=label_column)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "file" and field in error["message"] and said in error["message"]


def test_the_cli_shows_a_regressors_values_by_target():
    from rich.console import Console

    from tunery import _render
    from tunery.types import Prediction

    answer = Prediction(values=[[101.5, 0.25], [87.0, -0.5]], targets=["price", "risk"])
    console = Console(width=80, record=True)
    console.print(_render.predictions_table(answer))
    shown = console.export_text()
    assert "price" in shown and "risk" in shown and "101.5" in shown and "-0.5" in shown
    assert _render._headline({"test_r2": 0.91, "train_loss": 0.1}).startswith("test_r2")
    forecaster = {"test_r2": 0.9, "test_mase": 0.44, "train_loss": 0.1}
    assert _render._headline(forecaster) == "test_mase 0.44"


def tagged_table(path, rows: int = 400):
    """Each row's tags follow its features: `hot` where a > 0, `wet` where b > 0.5, none for
    a quarter of the rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 2))
    lines = ["a,b,tags"]
    for a, b in x:
        tags = [name for name, on in (("hot", a > 0), ("wet", b > 0.5)) if on]
        lines.append(f"{a:.4f},{b:.4f},{';'.join(tags)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_multilabel_table_uploads_trains_and_predicts_label_sets(client, tmp_path):
    uploaded = upload(client, tagged_table(tmp_path / "tags.csv"), task="multilabel",
                      label_column="tags")  # fmt: skip
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert (dataset["task"], dataset["labels"]) == ("multilabel", ["hot", "wet"])
    job = mlp_trained_on(client, dataset["id"])
    metrics = job["metrics"]
    assert metrics["test_micro_f1"] > 0.9 and metrics["test_subset_accuracy"] > 0.8, metrics
    model_id = job["result_model_id"]
    rows = [[2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]]
    body = client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert answer["label_sets"] == [["hot", "wet"], ["hot"], []], answer
    assert answer["labels"] == ["hot", "wet"] and len(answer["thresholds"]) == 2
    assert answer["predictions"] is None and np.asarray(answer["probabilities"]).shape == (3, 2)


def lit_halves(path, count: int = 120):
    """A zip of 8x8 grey images whose left and right halves are each lit or dark at random,
    labelled in its labels.csv with the halves lit (possibly none)."""
    import io
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(0)
    index = ["file,labels"]
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            lit = {"left": rng.random() > 0.5, "right": rng.random() > 0.5}
            pixels = rng.integers(0, 60, size=(8, 8))
            pixels[:, :4] += 180 * lit["left"]
            pixels[:, 4:] += 180 * lit["right"]
            buffer = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
            archive.writestr(f"images/{i}.png", buffer.getvalue())
            index.append(f"images/{i}.png,{';'.join(half for half, on in lit.items() if on)}")
        archive.writestr("labels.csv", "\n".join(index) + "\n")
    return path


def test_multilabel_images_upload_with_their_labels_table_train_and_predict(client, tmp_path):
    uploaded = upload(client, lit_halves(tmp_path / "halves.zip"), task="multilabel")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert (dataset["task"], dataset["labels"], dataset["modality"]) == (
        "multilabel", ["left", "right"], "image"
    )  # fmt: skip
    spec = {
        "kind": "finetune",
        "model": {"architecture": "cnn", "params": {"channels": [4], "hidden": 16}},
        "data": {"train": dataset["id"]},
        "hyperparameters": {"epochs": 15, "batch_size": 16, "learning_rate": 1e-2},
    }
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert job["metrics"]["test_micro_f1"] > 0.9, job["metrics"]
    lit, dark = np.full((1, 8, 8), 220.0), np.full((1, 8, 8), 20.0)
    left = np.concatenate([lit[..., :4], dark[..., 4:]], axis=-1)
    inputs = [x.tolist() for x in (lit, left, dark)]
    body = client.post(f"/v1/models/{job['result_model_id']}/predict", json={"inputs": inputs})
    assert body.status_code == 200, body.text
    assert body.json()["label_sets"] == [["left", "right"], ["left"], []], body.json()
    probabilities = onnx_in_clean_process(client, job["result_model_id"], inputs, tmp_path)
    np.testing.assert_allclose(probabilities, body.json()["probabilities"], atol=1e-4)


def test_the_cli_shows_a_multilabel_models_label_sets():
    from rich.console import Console

    from tunery import _render
    from tunery.types import Prediction

    answer = Prediction(label_sets=[["hot", "wet"], []], probabilities=[[0.9, 0.8], [0.1, 0.2]],
                        labels=["hot", "wet"], thresholds=[0.5, 0.4])  # fmt: skip
    console = Console(width=80, record=True)
    console.print(_render.predictions_table(answer))
    shown = console.export_text()
    assert "hot, wet" in shown and "(none)" in shown


def test_a_tagged_jsonl_uploads_trains_and_tags_each_word(client, tmp_path):
    from tests.test_token_tagging import tagged_file

    uploaded = upload(client, tagged_file(tmp_path / "tagged.jsonl"), task="token_classification")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["labels"] == ["O", "B-PER", "B-PERCENT"] and dataset["modality"] == "text"
    assert dataset["class_counts"]["B-PER"] == 400  # one titled name a sentence
    spec = {
        "kind": "finetune",
        "model": {"architecture": "gru", "params": {"vocab_size": 200, "max_length": 24,
                                                    "embedding_dim": 32, "hidden": 32}},
        "data": {"train": dataset["id"]},
        "hyperparameters": {"epochs": 12, "batch_size": 16, "learning_rate": 1e-2},
    }  # fmt: skip
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert job["metrics"]["test_entity_f1"] > 0.9, job["metrics"]
    model_id = job["result_model_id"]
    inputs = ["the board said Mr Smith rose 5%", ["Dr", "Jones", "fell"]]
    body = client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert answer["words"][0] == ["the", "board", "said", "Mr", "Smith", "rose", "5%"]
    tags = answer["tags"]
    assert len(tags[0]) == 7 and tags[0][:5] == ["O", "O", "O", "O", "B-PER"], answer
    assert tags[1] == ["O", "B-PER", "O"], answer
    archive = client.get(f"/v1/models/{model_id}/download", params={"format": "archive"})
    assert archive.status_code == 200, archive.text
    with archive_server(archive.content, tmp_path / "archive") as served_url:
        served = httpx.post(f"{served_url}/predict", json={"inputs": inputs})
        assert served.status_code == 200, served.text
        assert (served.json()["tags"], served.json()["words"]) == (tags, answer["words"])
    too_long = client.post(f"/v1/models/{model_id}/predict", json={"inputs": ["the " * 30]})
    assert too_long.status_code == 422, too_long.text
    errors = {e["field"]: e["message"] for e in too_long.json()["errors"]}
    assert "more than the model's 24 tokens" in errors["inputs[0]"], errors
