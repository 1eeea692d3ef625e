"""A forecasting job through the service (embedded SQLite stack, a real worker): a window too
long refused at submission naming its field; a GRU on `builtin:macro` whose predict takes
contexts as the table has them (rows keyed by column name) and answers each series' next
values in its units, as its ONNX download does in a clean onnxruntime process; a missing or
unknown column refused naming it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.test_e2e import finished, wait_for
from tests.test_heads_api import ONNX_IN_CLEAN_PROCESS, client  # noqa: F401 (the fixture)
from trainer.data import load_dataset

pytestmark = pytest.mark.e2e

SPEC = {
    "kind": "finetune",
    "model": {"architecture": "gru", "params": {"hidden": 32, "embedding_dim": 16}},
    "data": {"train": "builtin:macro"},
    "hyperparameters": {"epochs": 5, "batch_size": 32, "learning_rate": 3e-3},
}


def test_a_horizon_longer_than_the_series_allows_is_refused_and_nothing_queued(client):  # noqa: F811
    before = len(client.get("/v1/jobs").json()["data"])
    spec = SPEC | {"data": {"train": "builtin:macro", "horizon": 30}}
    refused = client.post("/v1/jobs", json=spec)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "data.horizon" and "at most 20" in error["message"], error
    assert len(client.get("/v1/jobs").json()["data"]) == before


def test_a_forecaster_predicts_each_series_from_rows_keyed_by_column(client, tmp_path):  # noqa: F811
    submitted = client.post("/v1/jobs", json=SPEC)
    assert submitted.status_code == 201, submitted.text
    job = wait_for(client, submitted.json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert 0 < job["metrics"]["test_mase"] < 3 and "test_accuracy" not in job["metrics"]
    model_id = job["result_model_id"]
    model = client.get(f"/v1/models/{model_id}").json()
    assert model["task"] == "forecasting"

    dataset = load_dataset("builtin:macro")
    contexts = dataset.splits["test"].x[:2].tolist()  # (2, 8 quarters, 5 columns)
    columns = dataset.series.columns
    keyed = [[dict(zip(columns, row, strict=True)) for row in context] for context in contexts]
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": keyed})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["targets"] == list(dataset.series.series) and body["values"] is None
    first = body["forecasts"][0]
    assert set(first) == set(body["targets"]) and all(len(v) == 4 for v in first.values())
    assert all(-10 < v < 10 for v in first["realgdp_growth"])  # percent per quarter
    numeric = client.post(f"/v1/models/{model_id}/predict", json={"inputs": contexts})
    assert numeric.json()["forecasts"] == body["forecasts"]

    onnx = client.get(f"/v1/models/{model_id}/download", params={"format": "onnx"})
    assert onnx.status_code == 200, onnx.text
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx.content)
    done = subprocess.run(
        [sys.executable, "-c", ONNX_IN_CLEAN_PROCESS, str(path), json.dumps(contexts)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    expected = [[f[name] for name in body["targets"]] for f in body["forecasts"]]
    onnx_values = np.asarray(json.loads(done.stdout)).transpose(0, 2, 1)  # (N, series, steps)
    np.testing.assert_allclose(onnx_values, expected, rtol=1e-4, atol=1e-4)

    keyed[0][3].pop("tbilrate")
    keyed[1][0]["price"] = 1.0
    refused = client.post(f"/v1/models/{model_id}/predict", json={"inputs": keyed})
    assert refused.status_code == 422, refused.text
    fields = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert "no value for column 'tbilrate'" in fields["inputs[0][3].tbilrate"], fields
    assert "unknown column 'price'" in fields["inputs[1][0].price"], fields
    short = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [keyed[1][1:]]})
    assert short.status_code == 422 and "reads the last 8" in short.text, short.text


def test_the_cli_shows_a_forecasters_values_by_series_and_step():
    from rich.console import Console

    from tunery import _render
    from tunery.types import Prediction

    answer = Prediction(forecasts=[{"co2": [371.25, 372.5]}], targets=["co2"])
    console = Console(width=80, record=True)
    console.print(_render.predictions_table(answer))
    shown = console.export_text()
    assert "co2" in shown and "371.25" in shown and "372.5" in shown and "step" in shown
