"""Forecasting in the training core, without the service: windows cut in time without
leakage, MASE's benchmark and scale, GRU/LSTM/transformer/MLP trunks reading a numeric
series, the forecaster's card, its reload and its ONNX graph, and the spec checks on its
window."""

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from tests.test_methods import run, series
from trainer.artifact import load_predictor, save_model
from trainer.data import load_dataset, splits_for
from trainer.export import export_onnx
from trainer.series import SeriesTable, mase_scale, seasonal_naive, windows
from trainer.spec import JobSpec
from trainer.validation import check_spec

SMALL = {
    "gru": {"hidden": 32, "embedding_dim": 16},
    "lstm": {"hidden": 32, "embedding_dim": 16},
    "transformer": {"d_model": 32, "layers": 1, "heads": 2, "max_length": 64, "dropout": 0.0},
    "mlp": {"hidden": [64], "dropout": 0.0},
}


def forecast_spec(architecture: str, dataset: str, epochs: int = 10, **data) -> dict:
    return {
        "kind": "finetune",
        "model": {"architecture": architecture, "params": SMALL[architecture]},
        "data": {"train": dataset, **data},
        "hyperparameters": {"epochs": epochs, "batch_size": 32, "learning_rate": 3e-3},
    }


def row_numbers(rows: int, columns: int = 2) -> SeriesTable:
    """A table whose every value is its row's number: windows show which rows they hold."""
    values = np.repeat(np.arange(rows, dtype=np.float32)[:, None], columns, axis=1)
    names = tuple(f"c{i}" for i in range(columns))
    return SeriesTable(values, names, names[:1], season=4, context_length=6, horizon=3)


def test_windows_are_cut_in_time_and_no_forecast_crosses_a_part():
    table = row_numbers(100)
    forecast_rows = {}
    for part in ("train", "validation", "test"):
        contexts, targets = windows(table, part, 6, 3)
        assert contexts.shape[1:] == (6, 2) and targets.shape[1:] == (3, 1)  # the series alone
        # Each context is the six rows just before its forecast, oldest first.
        start = targets[:, 0, 0]
        assert torch.equal(contexts[:, :, 0], start[:, None] - torch.arange(6, 0, -1))
        assert torch.equal(targets[:, :, 0], start[:, None] + torch.arange(3))
        forecast_rows[part] = set(targets.flatten().int().tolist())
    # 70/10/20 in time: every forecast row of a part is in that part, and the parts cover
    # each forecastable row once.
    assert forecast_rows["train"] == set(range(6, 70))
    assert forecast_rows["validation"] == set(range(70, 80))
    assert forecast_rows["test"] == set(range(80, 100))


def test_the_seasonal_naive_forecast_repeats_the_last_season_and_scales_mase():
    context = torch.arange(10.0).reshape(1, 10, 1)
    forecast = seasonal_naive(context, horizon=6, season=4)
    assert forecast.flatten().tolist() == [6, 7, 8, 9, 6, 7]
    # A season of 4 over a trend of 0.5 a row: the in-sample seasonal difference is 2 a row.
    rows = np.arange(50, dtype=np.float32)
    values = (np.tile([0.0, 5.0, 1.0, -3.0], 13)[:50] + 0.5 * rows)[:, None].astype(np.float32)
    table = SeriesTable(values, ("y",), ("y",), season=4, context_length=8, horizon=4)
    assert mase_scale(table) == pytest.approx([2.0])


@pytest.fixture(scope="module")
def co2_mlp(tmp_path_factory):
    result, events = run(forecast_spec("mlp", "builtin:co2", epochs=25))
    path = tmp_path_factory.mktemp("forecasting") / "model.safetensors"
    save_model(result.model, result.card, path)
    return result, events, path


def test_an_mlp_forecasts_co2_better_than_the_seasonal_naive_forecast(co2_mlp):
    result, events, _path = co2_mlp
    metrics, card = result.card.metrics, result.card
    test = load_dataset("builtin:co2").splits["test"]
    naive = seasonal_naive(test.x, horizon=12, season=12)
    naive_mase = (naive - test.y).abs().mean().item() / card.mase_scale[0]
    assert naive_mase > 1  # the trend: a year ago was lower
    assert metrics["test_mase"] < 0.8 * naive_mase, (metrics, naive_mase)
    assert 0 < metrics["test_mae"] < metrics["test_rmse"] < 3  # ppm
    assert len(series(events, "mase", "validation")) == 25  # every epoch
    assert card.task == "forecasting" and card.targets == ["co2"] and card.modality == "series"
    assert (card.input_shape, card.horizon, card.season) == ([24, 1], 12, 12)
    # It forecasts changes from the context's last week, and reads the context as such.
    assert card.changes_from_last_row == 1
    train = load_dataset("builtin:co2").splits["train"]
    changes = train.y - train.x[:, -1:, :1]
    assert card.target_scaling.mean[0] == pytest.approx(changes.mean().item(), abs=1e-3)
    assert card.target_scaling.std[0] == pytest.approx(changes.std(correction=0).item(), rel=1e-3)


def test_a_forecaster_reloads_and_exports_in_the_series_units(co2_mlp, tmp_path):
    import onnxruntime

    result, _events, path = co2_mlp
    network, _card = load_predictor(path)
    x = load_dataset("builtin:co2").splits["test"].x
    with torch.no_grad():
        expected = result.model.eval()(x)
        assert torch.allclose(network(x), expected, atol=1e-4)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(path, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path))
    values, _features = session.run(None, {"inputs": x.numpy()})
    assert values.shape == (len(x), 12, 1)
    np.testing.assert_allclose(values, expected.numpy(), atol=1e-3)
    assert 330 < float(values.mean()) < 380  # ppm


@pytest.mark.parametrize("architecture", ["gru", "lstm", "transformer"])
def test_sequence_trunks_forecast_several_series_from_a_window_the_job_sets(architecture, tmp_path):
    spec = forecast_spec(architecture, "builtin:macro", epochs=4, context_length=12, horizon=2)
    result, _events = run(spec)
    card, metrics = result.card, result.card.metrics
    assert card.input_shape == [12, 5] and card.horizon == 2 and card.season == 4
    assert card.feature_names == [
        "realgdp_growth", "realcons_growth", "realinv_growth", "unemp", "tbilrate"
    ]  # fmt: skip
    assert card.targets == card.feature_names[:3]
    each = [metrics[f"test_mase_{name}"] for name in card.targets]
    assert metrics["test_mase"] == pytest.approx(sum(each) / 3) and min(each) > 0
    assert metrics["best_epoch"] >= 1 and metrics["test_mase"] < 3  # it learnt something
    path = tmp_path / "model.safetensors"
    save_model(result.model, card, path)
    network, _card = load_predictor(path)
    _dataset, _train, _validation, test = splits_for("builtin:macro", None, None, 0, 12, 2)
    with torch.no_grad():
        forecast = network(test.x)
    assert forecast.shape == (len(test), 2, 3)
    torch.testing.assert_close(forecast, result.model.eval()(test.x), atol=1e-4, rtol=1e-4)


def check(spec: dict) -> list:
    return check_spec(TypeAdapter(JobSpec).validate_python(spec))


@pytest.mark.parametrize(
    ("data", "field", "said"),
    [
        ({"horizon": 60}, "data.horizon", "at most 53"),  # co2's validation part: 53 months
        ({"context_length": 368}, "data.context_length", "leaves no training window"),
        ({"context_length": 300, "horizon": 60}, "data.horizon", "at most 53"),
    ],
)
def test_a_window_longer_than_the_series_allows_is_refused_naming_its_field(data, field, said):
    issues = check(forecast_spec("gru", "builtin:co2", **data))
    assert [i.field for i in issues] == [field] and said in issues[0].message, issues
    assert check(forecast_spec("gru", "builtin:co2", horizon=53)) == []


def test_a_window_is_refused_on_data_that_is_no_series_and_a_context_over_max_length():
    spec = forecast_spec("mlp", "builtin:diabetes", horizon=3)
    issues = check(spec)
    assert [i.field for i in issues] == ["data.horizon"] and "not a series" in issues[0].message
    issues = check(forecast_spec("transformer", "builtin:co2", context_length=100))
    assert [i.field for i in issues] == ["model.params"] and "max_length 64" in issues[0].message
    issues = check(forecast_spec("gru", "builtin:co2") | {"model": {"architecture": "cnn"}})
    assert [i.field for i in issues] == ["model.architecture"], issues
