"""Deep CORAL (Sun & Saenko, 2016): match the covariances of source and target features."""

import torch

from trainer.methods.adaptation import AdaptParams, adapt
from trainer.run import RunContext, TrainResult

Params = AdaptParams


def coral_loss(source: torch.Tensor, target: torch.Tensor, _progress: float = 0.0) -> torch.Tensor:
    """Squared Frobenius distance of the feature covariances, over 4 d^2."""
    d = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * d * d)


def run(ctx: RunContext, params: Params) -> TrainResult:
    return adapt(ctx, params.weight, lambda _dim: (coral_loss, None), adabn=params.adabn)
