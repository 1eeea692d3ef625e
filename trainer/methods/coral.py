"""Deep CORAL (Sun & Saenko, 2016): match the covariances of source and target features."""

import torch

from trainer.methods.adaptation import AdaptParams, Step, adapt
from trainer.run import RunContext, TrainResult

Params = AdaptParams


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the feature covariances, over 4 d^2."""
    d = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * d * d)


def run(ctx: RunContext, params: Params) -> TrainResult:
    def loss(step: Step) -> torch.Tensor:
        return coral_loss(step.source_features, step.target_features)

    return adapt(ctx, params.weight, lambda _model, _generator: (loss, None), adabn=params.adabn)
