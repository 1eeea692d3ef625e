"""What `tunery jobs compare` lines up, without a server: metrics in their order, the best of
each, and the spec fields that differ."""

from trainer.spec import lower_is_better
from tunery import _compare
from tunery.types import Job

PRETRAIN = {
    "kind": "pretrain",
    "method": {"name": "autoencoder", "params": {"mask_ratio": 0.5}},
    "data": {"train": "builtin:digits"},
    "hyperparameters": {"epochs": 1, "learning_rate": 0.001},
    "model": {"architecture": "cnn", "params": {"hidden": [64, 32]}},
}
FINETUNE = {
    "kind": "finetune",
    "method": {"name": "supervised", "params": {}},
    "data": {"train": {"dataset": "builtin:digits", "fraction": 0.05}},
    "hyperparameters": {"epochs": 2, "learning_rate": 0.001},
    "model": {"architecture": "cnn", "params": {"hidden": [64, 32]}},
}


def test_flatten_names_leaves_by_dotted_path_and_lists_as_json():
    assert _compare.flatten(FINETUNE) == {
        "kind": "finetune",
        "method.name": "supervised",
        "data.train.dataset": "builtin:digits",
        "data.train.fraction": 0.05,
        "hyperparameters.epochs": 2,
        "hyperparameters.learning_rate": 0.001,
        "model.architecture": "cnn",
        "model.params.hidden": "[64, 32]",
    }


def test_differences_keep_only_the_paths_that_differ_and_null_where_one_lacks_it():
    assert _compare.differences([PRETRAIN, FINETUNE]) == {
        "data.train": ["builtin:digits", None],
        "data.train.dataset": [None, "builtin:digits"],
        "data.train.fraction": [None, 0.05],
        "hyperparameters.epochs": [1, 2],
        "kind": ["pretrain", "finetune"],
        "method.name": ["autoencoder", "supervised"],
        "method.params.mask_ratio": [0.5, None],
    }
    assert _compare.differences([FINETUNE, FINETUNE]) == {}


def test_metrics_put_test_then_validation_first_with_a_value_or_null_per_job():
    one = Job.model_construct(metrics={"train_loss": 0.2, "validation_loss": 0.3, "test_r2": 0.9})
    two = Job.model_construct(metrics={"validation_loss": 0.4, "test_accuracy": 0.8})
    assert _compare.metrics([one, two]) == {
        "test_accuracy": [None, 0.8],
        "test_r2": [0.9, None],
        "validation_loss": [0.3, 0.4],
        "train_loss": [0.2, None],
    }


def test_errors_are_better_lower_and_everything_else_higher():
    for name in ("validation_loss", "test_mae_sales", "test_rmse", "test_mase", "val_perplexity"):
        assert lower_is_better(name), name
    for name in ("test_accuracy", "validation_macro_f1", "test_r2", "validation_reward_accuracy"):
        assert not lower_is_better(name), name
