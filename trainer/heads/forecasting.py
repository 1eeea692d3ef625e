"""Forecasting: the trunk's features of a context onto the next `horizon` values of each
series, as the change from the context's last value of the series (`ForecastingHead.baseline`,
which `Network.outputs_and_features` adds back), so that a series which trends past its
training range is forecast from where it now is, not pulled back towards the levels it trained
on. The changes are standardised per series by their mean and standard deviation over the
training windows and put back in the series' units inside the model, as regression's targets
are (so that predict and ONNX answer in the series' units); the loss is the standardised mean
squared error, each series weighing the same whatever its units.

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
    """A regression head onto horizon x series changes from the context's last values, shaped
    (N, horizon, series); `mean` and `std` are the changes' scaling."""

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
        changes = self.linear(features).view(-1, self.horizon, len(self.targets))
        return changes * self.std + self.mean

    def baseline(self, context: torch.Tensor) -> torch.Tensor:
        """The last value of each series in contexts (N, L, columns), as (N, 1, series)."""
        return context[:, -1:, : len(self.targets)]


def build(feature_dim: int, dataset: LabelledDataset, train: Split) -> ForecastingHead:
    series = len(dataset.series.series)
    changes = (train.y - train.x[:, -1:, :series]).double().reshape(-1, series)
    std = changes.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant series: left as it is
    return ForecastingHead(
        feature_dim, list(dataset.series.series), changes.mean(0).tolist(), std.tolist(),
        dataset.horizon, mase_scale(dataset.series),
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
