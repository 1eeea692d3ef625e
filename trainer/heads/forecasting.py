"""Forecasting: the trunk's features of a context onto the next `horizon` values of each
series, standardised per series by the training part's mean and standard deviation and put
back in the series' units inside the model, as regression's targets are (so that predict and
ONNX answer in them); the loss is the standardised mean squared error, each series weighing the
same whatever its units.

Figures over every forecast step of a split's windows: `mae`, `rmse`, `r2` in the series'
units (regression's), and `mase`, the MAE over MASE's scale (the training part's in-sample
seasonal-naive MAE, `trainer.series.mase_scale`: below 1 beats that benchmark); each the mean
over the series and, with several, per series (`mase_<series>`)."""

from typing import Any

import torch
from torch import nn

from trainer.card import ModelCard, Normalization
from trainer.data import LabelledDataset, Split
from trainer.heads.regression import (
    RegressionHead,
    error_figures,
    per_target_figures,
    predictions,
)
from trainer.series import mase_scale


class ForecastingHead(RegressionHead):
    """A regression head onto horizon x series values, shaped (N, horizon, series)."""

    def __init__(
        self,
        feature_dim: int,
        series: list[str],
        mean: list[float],
        std: list[float],
        horizon: int,
        scale: list[float],
    ) -> None:
        super().__init__(feature_dim, series, mean, std, outputs=horizon * len(series))
        self.horizon = horizon
        self.register_buffer("mase_scale", torch.tensor(scale), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        values = self.linear(features).view(-1, self.horizon, len(self.targets))
        return values * self.std + self.mean


def build(feature_dim: int, dataset: LabelledDataset, _train: Split) -> ForecastingHead:
    table = dataset.series
    rows = table.part_rows()["train"]
    train = torch.tensor(table.series_values()[rows.start : rows.stop], dtype=torch.float64)
    std = train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant series: left as it is
    return ForecastingHead(
        feature_dim, list(table.series), train.mean(0).tolist(), std.tolist(), dataset.horizon,
        mase_scale(table),
    )  # fmt: skip


def from_card(feature_dim: int, card: ModelCard) -> ForecastingHead:
    scaling = card.target_scaling
    return ForecastingHead(
        feature_dim, card.targets, scaling.mean, scaling.std, card.horizon, card.mase_scale
    )


def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    head = model.head
    series = len(head.targets)
    predicted = predictions(model, split, batch_size, device).reshape(-1, series)
    y = split.y.double().reshape(-1, series)
    figures = error_figures(predicted, y, head.std, head.targets)
    mase = (predicted - y).abs().mean(0) / head.mase_scale.double().cpu()
    return figures | per_target_figures({"mase": mase}, head.targets)


def card_fields(dataset: LabelledDataset, head: ForecastingHead) -> dict[str, Any]:
    return {
        "targets": list(dataset.targets),
        "target_scaling": Normalization(mean=head.mean.tolist(), std=head.std.tolist()),
        "horizon": head.horizon,
        "season": dataset.series.season,
        "mase_scale": head.mase_scale.tolist(),
    }
