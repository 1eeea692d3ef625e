"""Task heads (`trainer.heads`) in the training core, without the service: regression on
scikit-learn's diabetes and Linnerud tables, its card, its reload and its ONNX graph, and the
spec checks that keep each method to the tasks it trains."""

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter
from sklearn.linear_model import Ridge

from tests.test_methods import run, series
from trainer.artifact import load_predictor, save_model
from trainer.data import load_dataset
from trainer.export import export_onnx
from trainer.spec import JobSpec
from trainer.validation import check_spec

MLP = {"architecture": "mlp", "params": {"hidden": [64], "dropout": 0.0}}


def regression_spec(dataset: str = "builtin:diabetes", **data) -> dict:
    return {
        "kind": "finetune",
        "model": MLP,
        "data": {"train": dataset, **data},
        "hyperparameters": {"epochs": 60, "batch_size": 32, "learning_rate": 3e-3, "seed": 0},
    }


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    result, events = run(regression_spec())
    path = tmp_path_factory.mktemp("regression") / "model.safetensors"
    save_model(result.model, result.card, path)
    return result, events, path


def test_regression_learns_diabetes_as_well_as_ridge_on_the_same_split(diabetes):
    result, events, _path = diabetes
    metrics = result.card.metrics
    splits = load_dataset("builtin:diabetes").splits
    ridge = Ridge(alpha=1.0).fit(splits["train"].x.numpy(), splits["train"].y.numpy())
    test = splits["test"]
    ridge_r2 = ridge.score(test.x.numpy(), test.y.numpy())
    # The MLP on standardised features is within a few points of the linear model's R².
    assert metrics["test_r2"] > ridge_r2 - 0.1 and metrics["test_r2"] > 0.2, (metrics, ridge_r2)
    assert 30 < metrics["test_mae"] < metrics["test_rmse"] < 80  # in the target's units
    assert len(series(events, "rmse", "validation")) >= 60  # every epoch (and epoch 0)
    assert result.card.task == "regression" and result.card.targets == ["progression"]
    mean = result.card.target_scaling.mean[0]
    assert abs(mean - splits["train"].y.mean().item()) < 1e-3


def test_a_regressor_reloads_and_exports_in_the_targets_units(diabetes, tmp_path):
    import onnxruntime

    result, _events, path = diabetes
    network, card = load_predictor(path)
    x = load_dataset("builtin:diabetes").splits["test"].x
    with torch.no_grad():
        expected = result.model.eval()(x)
        assert torch.allclose(network(x), expected, atol=1e-5)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(path, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path))
    assert [o.name for o in session.get_outputs()] == ["values", "embeddings"]
    values, _features = session.run(None, {"inputs": x.numpy()})
    np.testing.assert_allclose(values, expected.numpy(), atol=1e-3)
    assert card.targets == ["progression"] and 25 < float(values.mean()) < 350


def test_several_targets_report_each_and_their_mean():
    result, _events = run(regression_spec("builtin:linnerud") | {
        "hyperparameters": {"epochs": 5, "batch_size": 4, "seed": 0}})  # fmt: skip
    metrics = result.card.metrics
    assert result.card.targets == ["weight", "waist", "pulse"]
    for name in ("mae", "rmse", "r2"):
        each = [metrics[f"test_{name}_{t}"] for t in result.card.targets]
        assert metrics[f"test_{name}"] == pytest.approx(sum(each) / 3)


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        (
            {"method": {"name": "dann"}, "kind": "adapt",
             "data": {"source": "builtin:diabetes", "target": "builtin:diabetes"}},
            "data.source",
            "trains classification models; builtin:diabetes is regression data",
        ),
        (
            {"data": {"train": {"dataset": "builtin:diabetes", "per_class": 5}}},
            "data.train.per_class",
            "select with `fraction`",
        ),
    ],
)  # fmt: skip
def test_a_method_trains_only_the_tasks_it_has_heads_for(change, field, said):
    spec = TypeAdapter(JobSpec).validate_python(regression_spec() | change)
    issues = check_spec(spec)
    assert any(i.field == field and said in i.message for i in issues), issues
