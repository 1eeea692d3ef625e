"""Regression onto one or more numeric targets: a linear layer onto the targets standardised
by the training split's mean and standard deviation, its outputs put back in the targets' units
inside the model (so that predict and ONNX answer in them); the loss is the mean squared error
of the standardised values, so that each target weighs the same whatever its units.

Figures: `mae` and `rmse` in the targets' units, `r2` (1 - residual / total sum of squares
about the split's own mean), each the mean over the targets and, with several, per target
(`mae_<target>`); `loss` is the standardised mean squared error."""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.card import ModelCard, Normalization
from trainer.data import LabelledDataset, Split
from trainer.training import standardisation


class RegressionHead(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        targets: list[str],
        mean: list[float],
        std: list[float],
        outputs: int | None = None,  # default: one per target
    ) -> None:
        super().__init__()
        self.targets = targets
        self.linear = nn.Linear(feature_dim, outputs or len(targets))
        # From the card, not the weights: the card says how the model's outputs are scaled.
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def standardised(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * self.std + self.mean


def build(feature_dim: int, dataset: LabelledDataset, train: Split) -> RegressionHead:
    y = train.y.double()
    std = y.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant target: left as it is
    return RegressionHead(feature_dim, list(dataset.targets), y.mean(0).tolist(), std.tolist())


def from_card(feature_dim: int, card: ModelCard) -> RegressionHead:
    scaling = card.target_scaling
    return RegressionHead(feature_dim, card.targets, scaling.mean, scaling.std)


def loss(head: RegressionHead, values: torch.Tensor, y: torch.Tensor, _smoothing: float):
    return F.mse_loss(head.standardised(values), head.standardised(y))


@torch.no_grad()
def predictions(model: nn.Module, split: Split, batch_size: int, device: torch.device):
    """The model's outputs on a split, in float64 on the CPU."""
    model.eval()
    return torch.cat([
        model(split.x[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, len(split), batch_size)
    ]).double()  # fmt: skip


def error_figures(
    predicted: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, targets: list[str]
) -> dict[str, float]:
    """`loss` (the mean squared error in units of `scale`), and `mae`, `rmse` and `r2` over
    the targets (N, T): the mean over the targets and, with several, per target."""
    y = y.double()
    error = predicted - y
    per_target = {
        "mae": error.abs().mean(0),
        "rmse": error.pow(2).mean(0).sqrt(),
        "r2": 1 - error.pow(2).sum(0) / (y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12),
    }
    figures = {"loss": (error / scale.double().cpu()).pow(2).mean().item()}
    return figures | per_target_figures(per_target, targets)


def per_target_figures(per_target: dict[str, torch.Tensor], targets: list[str]) -> dict:
    """Each figure's mean over the targets and, with several, its value for each
    (`mae_<target>`)."""
    figures = {name: values.mean().item() for name, values in per_target.items()}
    if len(targets) > 1:
        for name, values in per_target.items():
            figures |= {f"{name}_{t}": v for t, v in zip(targets, values.tolist(), strict=True)}
    return figures


def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    predicted = predictions(model, split, batch_size, device)
    return error_figures(predicted, split.y, model.head.std, model.head.targets)


def fit_to_features(head: RegressionHead, features: torch.Tensor, y: torch.Tensor) -> float:
    """Set the head to a ridge regression of the standardised targets on the standardised
    features, its penalty chosen by leave-one-out error on these examples (scikit-learn's
    `RidgeCV`: with about as many features as examples, a fixed penalty overfits them);
    returns its training R²."""
    from sklearn.linear_model import RidgeCV

    mean, std, live = standardisation(features)
    x = ((features - mean) / std * live).double().cpu().numpy()
    # Flat (N, outputs): a forecaster's (N, horizon, series) too.
    targets = head.standardised(y).reshape(len(y), -1).double().cpu().numpy()
    ridge = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(x, targets)
    weight = torch.as_tensor(ridge.coef_, dtype=torch.float32, device=features.device)
    weight = weight.reshape(head.linear.out_features, -1)
    scaled = weight / std * live  # the same outputs from the raw features
    intercept = torch.as_tensor(ridge.intercept_, dtype=torch.float32, device=features.device)
    head.linear.weight.copy_(scaled)
    head.linear.bias.copy_(intercept.reshape(-1) - scaled @ mean)
    error = head(features) - y
    return (1 - error.pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()


def values(outputs: torch.Tensor) -> torch.Tensor:
    """What predict answers: the head's outputs, already in the targets' units."""
    return outputs


def card_fields(dataset: LabelledDataset, head: RegressionHead) -> dict[str, Any]:
    scaling = Normalization(mean=head.mean.tolist(), std=head.std.tolist())
    return {"targets": list(dataset.targets), "target_scaling": scaling}
