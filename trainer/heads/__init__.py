"""The registry of task heads: what a fine-tuned trunk ends in, by the dataset's task. Adding
one is a new module plus one line here.

A head says how it is built for a dataset (`build`) and rebuilt from a model's card
(`from_card`), its loss, its figures on a split (`evaluate`), what the card keeps of it
(`card_fields`: a classifier's labels, a regressor's targets and their scaling, a multilabel
head's thresholds, a forecaster's horizon) and which of those make a base model's head
reusable (`identity`), how it is fitted to a pretrained backbone's frozen features before
fine-tuning (`fit_to_features`, LP-FT), what it tunes on the validation split after training
(`calibrate`) and what predict answers (`serve`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.card import ModelCard
from trainer.data import LabelledDataset, Split
from trainer.heads import (
    classification,
    forecasting,
    multilabel,
    regression,
    token_classification,
)
from trainer.trunk import Trunk


@dataclass(frozen=True)
class TaskHead:
    task: str
    # (feature_dim, dataset, training split) -> a new head
    build: Callable[[int, LabelledDataset, Split], nn.Module]
    # (feature_dim, card) -> the head a stored model's card describes
    from_card: Callable[[int, ModelCard], nn.Module]
    # (head, outputs, targets, label_smoothing) -> the batch's mean loss
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
    # (model, split, batch_size, device) -> its figures on the split, `loss` first
    evaluate: Callable[[nn.Module, Split, int, torch.device], dict[str, float]]
    monitor: str  # the figure that picks the best epoch
    mode: str  # "max" or "min": which way it is better
    validation_metrics: tuple[str, ...]  # what it reports on the validation split
    # (dataset, head) -> the card's fields for it
    card_fields: Callable[[LabelledDataset, nn.Module], dict[str, Any]]
    # the card fields on which a base model's head must agree to be trained on, not replaced
    identity: tuple[str, ...]
    # (head, frozen features, targets) -> its training score: `head_init: probe`'s fit
    fit_to_features: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
    fit_description: str  # what that fit is, as the job's events say it
    fit_score: str  # the name of the score it returns
    # (the head's outputs) -> what predict answers: a classifier's probabilities, a
    # regressor's values
    serve: Callable[[torch.Tensor], torch.Tensor]
    # (trunk, split) -> the split as the model reads it: its inputs, and its labels as the
    # head's outputs line up with them (a token tagger's at each word's first piece)
    inputs: Callable[[Trunk, Split], Split] = lambda trunk, split: Split(
        split.y, trunk.inputs(split)
    )
    per_token: bool = False  # whether the head reads a feature vector per token (Network)
    # (model, validation split, batch_size, device) -> what it set, for the job's events: the
    # head's settings tuned on validation once training ends (multilabel's thresholds)
    calibrate: Callable[[nn.Module, Split, int, torch.device], str] | None = None


HEADS: dict[str, TaskHead] = {
    head.task: head
    for head in (
        TaskHead(
            "classification",
            classification.build,
            classification.from_card,
            classification.loss,
            classification.evaluate,
            monitor="accuracy",
            mode="max",
            validation_metrics=("loss", "accuracy", "macro_f1"),
            card_fields=classification.card_fields,
            identity=("labels",),
            fit_to_features=classification.fit_to_features,
            fit_description="a logistic regression",
            fit_score="accuracy",
            serve=classification.probabilities,
        ),
        TaskHead(
            "regression",
            regression.build,
            regression.from_card,
            regression.loss,
            regression.evaluate,
            monitor="rmse",
            mode="min",
            validation_metrics=("loss", "mae", "rmse", "r2"),
            card_fields=regression.card_fields,
            identity=("targets", "target_scaling"),
            fit_to_features=regression.fit_to_features,
            fit_description="a ridge regression",
            fit_score="R²",
            serve=regression.values,
        ),
        TaskHead(
            "token_classification",
            token_classification.build,
            token_classification.from_card,
            token_classification.loss,
            token_classification.evaluate,
            monitor="entity_f1",
            mode="max",
            validation_metrics=("loss", "entity_f1", "token_accuracy"),
            card_fields=token_classification.card_fields,
            identity=("labels",),
            fit_to_features=token_classification.fit_to_features,
            fit_description="a logistic regression of each word's tag",
            fit_score="token accuracy",
            serve=token_classification.probabilities,
            inputs=token_classification.inputs,
            per_token=True,
        ),
        TaskHead(
            "multilabel",
            multilabel.build,
            multilabel.from_card,
            multilabel.loss,
            multilabel.evaluate,
            monitor="micro_f1",
            mode="max",
            validation_metrics=("loss", "micro_f1", "macro_f1", "subset_accuracy"),
            card_fields=multilabel.card_fields,
            identity=("labels",),
            fit_to_features=multilabel.fit_to_features,
            fit_description="a logistic regression per label",
            fit_score="micro-F1",
            serve=multilabel.probabilities,
            calibrate=multilabel.tune_thresholds,
        ),
        TaskHead(
            "forecasting",
            forecasting.build,
            forecasting.from_card,
            regression.loss,
            forecasting.evaluate,
            monitor="mase",
            mode="min",
            validation_metrics=("loss", "mae", "rmse", "r2", "mase"),
            card_fields=forecasting.card_fields,
            identity=("targets", "target_scaling", "horizon"),
            fit_to_features=regression.fit_to_features,
            fit_description="a ridge regression",
            fit_score="R²",
            serve=regression.values,
        ),
    )
}
