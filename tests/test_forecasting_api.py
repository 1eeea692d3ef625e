"""A forecasting job through the service (embedded SQLite stack, a real worker): a window too
long refused at submission naming its field; a GRU on `builtin:macro` whose predict takes
contexts as the table has them (rows keyed by column name) and answers each series' next
values in its units, as its ONNX download does in a clean onnxruntime process; a missing or
unknown column refused naming it; a csv of monthly series uploaded with `task: forecasting`,
trained on and predicted from."""

import numpy as np
import pytest

from tests.test_e2e import finished, wait_for
from tests.test_heads_api import client, onnx_in_clean_process, upload  # noqa: F401 (fixture)
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

    expected = [[f[name] for name in body["targets"]] for f in body["forecasts"]]
    onnx_values = onnx_in_clean_process(client, model_id, contexts, tmp_path)
    onnx_values = onnx_values.transpose(0, 2, 1)  # (N, series, steps)
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


def monthly_table(path, rows: int = 120, bad_row: int | None = None):
    """Two monthly series (a yearly cycle on a trend, and its echo) and a covariate, the rows
    shuffled: the reader sorts them by month."""
    rng = np.random.default_rng(0)
    months = [f"{2000 + m // 12}-{m % 12 + 1:02d}-01" for m in range(rows)]
    cycle = 10 * np.sin(2 * np.pi * np.arange(rows) / 12)
    sales = 100 + 0.5 * np.arange(rows) + cycle + rng.normal(size=rows)
    echo = np.roll(sales, 1) * 0.5
    lines = [f"{m},{s:.3f},{e:.3f},{t:.1f}" for m, s, e, t in
             zip(months, sales, echo, rng.uniform(0, 30, rows), strict=True)]  # fmt: skip
    if bad_row is not None:
        lines[bad_row] = lines[bad_row].replace(lines[bad_row].split(",")[1], "n/a", 1)
    order = rng.permutation(rows)
    path.write_text("month,sales,echo,temperature\n" + "\n".join(lines[i] for i in order) + "\n")
    return path


def test_a_csv_of_series_uploads_with_its_time_column_trains_and_predicts(client, tmp_path):  # noqa: F811
    table = monthly_table(tmp_path / "sales.csv")
    uploaded = upload(client, table, task="forecasting", label_column="sales, echo",
                      time_column="month")  # fmt: skip
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert (dataset["modality"], dataset["targets"]) == ("series", ["sales", "echo"])
    assert dataset["feature_names"] == ["sales", "echo", "temperature"]
    assert dataset["series"] == {
        "time_column": "month", "season": 12, "context_length": 24, "horizon": 12,
        "part_rows": [84, 12, 24],
    }  # fmt: skip
    assert dataset["input_shape"] == [24, 3]
    spec = SPEC | {"data": {"train": dataset["id"], "horizon": 13}}
    refused = client.post("/v1/jobs", json=spec)
    assert refused.status_code == 422 and "at most 12" in refused.text, refused.text
    spec = SPEC | {"data": {"train": dataset["id"], "horizon": 6}}
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert 0 < job["metrics"]["test_mase_sales"] < 10, job["metrics"]
    rows = [{"sales": 150.0, "echo": 75.0, "temperature": 20.0}] * 24
    answer = client.post(f"/v1/models/{job['result_model_id']}/predict", json={"inputs": [rows]})
    assert answer.status_code == 200, answer.text
    (forecast,) = answer.json()["forecasts"]
    assert len(forecast["sales"]) == 6 and all(50 < v < 250 for v in forecast["sales"])


@pytest.mark.parametrize(
    ("form", "bad_row", "field", "said"),
    [
        ({"time_column": "month"}, 5, "file", "row 6 by time, column 'sales'"),
        ({"time_column": "day"}, None, "file", "column 'day'"),
        ({}, None, "time_column", "names its time column"),
    ],
)
def test_a_series_upload_that_cannot_be_read_is_refused_naming_where(
    client,  # noqa: F811
    tmp_path,
    form,
    bad_row,
    field,
    said,
):
    table = monthly_table(tmp_path / "bad.csv", rows=40, bad_row=bad_row)
    refused = upload(client, table, task="forecasting", label_column="sales", **form)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == field and said in error["message"], error


def test_the_cli_shows_a_forecasters_values_by_series_and_step():
    from rich.console import Console

    from tunery import _render
    from tunery.types import Prediction

    answer = Prediction(forecasts=[{"co2": [371.25, 372.5]}], targets=["co2"])
    console = Console(width=80, record=True)
    console.print(_render.predictions_table(answer))
    shown = console.export_text()
    assert "co2" in shown and "371.25" in shown and "372.5" in shown and "step" in shown
