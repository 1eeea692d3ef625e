"""Task heads (`trainer.heads`) in the training core, without the service: regression on
scikit-learn's diabetes and Linnerud tables, its card, its reload and its ONNX graph, and the
spec checks that keep each method to the tasks it trains."""

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter
from sklearn.linear_model import Ridge
from torch import nn

from tests.test_methods import run, series
from trainer.architectures import Network
from trainer.artifact import load_predictor, save_model
from trainer.data import LabelledDataset, Split, load_dataset
from trainer.export import export_onnx
from trainer.heads import HEADS
from trainer.methods.supervised import fit_head
from trainer.run import LoadedModel
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


def test_a_regression_head_is_fitted_to_raw_features_by_ridge():
    """Features of very different scales, one that never changes: the head, fitted on them
    standardised, predicts the targets in their units from the raw features."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 4, generator=generator) * torch.tensor([1000.0, 1.0, 0.001, 1.0])
    features[:, 3] = 7.0
    y = torch.stack([features[:, 0] / 1000 * 30 + 200, features[:, 2] * 1000 - 5], dim=1)
    y = y + torch.randn(200, 2, generator=generator) * 0.1
    dataset = LabelledDataset("t", "tabular", (4,), (), {}, task="regression", targets=("a", "b"))
    head = HEADS["regression"].build(4, dataset, Split(y, features))
    model = Network(nn.Identity(), nn.Identity(), head)
    examples, r2 = fit_head(
        model, HEADS["regression"], Split(y, features), 16, torch.device("cpu"), 0
    )
    with torch.no_grad():
        error = model(features) - y
    assert examples == 200 and r2 > 0.99 and error.abs().mean() < 0.5
    assert head.linear.weight[:, 3].abs().max() == 0


def test_autoencoder_pretraining_starts_a_regression_head_fitted_to_its_features():
    base, _ = run({"kind": "pretrain", "model": MLP, "method": {"name": "autoencoder"},
                   "data": {"train": "builtin:diabetes"},
                   "hyperparameters": {"epochs": 5, "batch_size": 32}})  # fmt: skip
    loaded = LoadedModel(base.model.state_dict(), base.card)
    spec = {k: v for k, v in regression_spec().items() if k != "model"}
    still = {"epochs": 1, "batch_size": 32, "learning_rate": 1e-9, "seed": 0}
    result, events = run(spec | {"base_model_id": "model_base", "hyperparameters": still}, loaded)
    assert any(e.get("message", "").startswith("head fitted") for e in events)
    assert "a ridge regression, training R²" in " ".join(e.get("message", "") for e in events)
    assert result.card.metrics["validation_r2"] > 0.1  # the fitted head, barely trained


@pytest.fixture(scope="module")
def digit_pairs(tmp_path_factory):
    spec = {
        "kind": "finetune",
        "model": {"architecture": "mlp", "params": {"hidden": [128]}},
        "data": {"train": "builtin:digit-pairs"},
        "hyperparameters": {"epochs": 8, "batch_size": 64, "learning_rate": 3e-3, "seed": 0},
    }
    result, events = run(spec)
    path = tmp_path_factory.mktemp("multilabel") / "model.safetensors"
    save_model(result.model, result.card, path)
    return result, events, path


def test_multilabel_learns_which_digits_an_image_shows(digit_pairs):
    result, events, _path = digit_pairs
    metrics, card = result.card.metrics, result.card
    # Chance (each label's base rate, 0.17) gives a micro-F1 near 0.17.
    assert metrics["test_micro_f1"] > 0.75 and metrics["test_macro_f1"] > 0.7, metrics
    assert 0.4 < metrics["test_subset_accuracy"] <= metrics["test_micro_f1"], metrics
    assert card.task == "multilabel" and card.labels == [str(d) for d in range(10)]
    assert len(card.thresholds) == 10 and set(card.thresholds) != {0.5}, card.thresholds
    tuned = [e["message"] for e in events if "thresholds tuned" in e.get("message", "")]
    assert tuned and "180 validation examples" in tuned[0]
    assert len(series(events, "micro_f1", "validation")) >= 8  # every epoch


def test_a_multilabel_model_reloads_and_exports_with_its_thresholds(digit_pairs, tmp_path):
    import onnxruntime

    result, _events, path = digit_pairs
    network, _card = load_predictor(path)
    assert network.head.thresholds.tolist() == pytest.approx(result.card.thresholds)
    x = load_dataset("builtin:digit-pairs").splits["test"].x[:8]
    with torch.no_grad():
        expected = torch.sigmoid(result.model.eval()(x))
        assert torch.allclose(torch.sigmoid(network(x)), expected, atol=1e-5)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(path, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path))
    assert [o.name for o in session.get_outputs()] == ["probabilities", "embeddings"]
    probabilities, _features = session.run(None, {"inputs": x.numpy()})
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-4)


def test_each_labels_threshold_is_the_one_that_maximises_its_f1_on_validation():
    """Label 0's positives score 0.3 and its negatives 0.1: any threshold in (0.1, 0.3] is
    perfect, and the one nearest 0.5 is kept; label 1 is never present and keeps 0.5."""
    from trainer.heads.multilabel import MultilabelHead, tune_thresholds

    probabilities = torch.tensor([[0.3, 0.4], [0.3, 0.2], [0.1, 0.3], [0.1, 0.1]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    head = MultilabelHead(2, 2, None)
    with torch.no_grad():
        head.linear.weight.copy_(torch.eye(2))
        head.linear.bias.zero_()
    model = Network(nn.Identity(), nn.Identity(), head)
    said = tune_thresholds(model, Split(y, torch.logit(probabilities)), 2, torch.device("cpu"))
    assert head.thresholds.tolist() == pytest.approx([0.3, 0.5]) and "0.3, 0.5" in said
    figures = HEADS["multilabel"].evaluate(model, Split(y, torch.logit(probabilities)), 4, "cpu")
    assert figures["micro_f1"] == 1.0 and figures["subset_accuracy"] == 1.0


def test_multilabel_data_is_selected_by_fraction_not_per_class():
    spec = TypeAdapter(JobSpec).validate_python(
        regression_spec({"dataset": "builtin:digit-pairs", "per_class": 5})
    )
    issues = check_spec(spec)
    assert any(i.field == "data.train.per_class" and "label sets" in i.message for i in issues), (
        issues
    )


def test_a_dataset_may_be_uploaded_for_every_task_head():
    from typing import get_args

    from app.schemas import DatasetTask
    from trainer.heads import HEADS

    assert set(HEADS) <= set(get_args(DatasetTask))


def test_an_npz_of_numeric_targets_trains_a_regressor(tmp_path):
    from sklearn.datasets import load_diabetes

    from trainer.data import register_file

    x, y = load_diabetes(return_X_y=True)
    path = tmp_path / "diabetes.npz"
    np.savez(path, x=x.astype(np.float32), y=np.stack([y, y / 10], axis=1))
    register_file("ds_npz_targets", path, "npz", True, "label", "regression")
    spec = {"kind": "finetune", "model": MLP, "data": {"train": "ds_npz_targets"},
            "hyperparameters": {"epochs": 30, "batch_size": 32, "learning_rate": 3e-3}}  # fmt: skip
    result, _events = run(spec)
    card = result.card
    assert card.task == "regression" and card.targets == ["y0", "y1"]
    assert card.metrics["test_r2_y0"] > 0.2 and card.metrics["test_r2_y1"] > 0.2, card.metrics
