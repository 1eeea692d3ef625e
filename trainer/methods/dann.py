"""DANN (Ganin et al., 2016): a domain discriminator learns to tell source features from
target features through a gradient-reversal layer, so the backbone learns to fool it. The
reversal strength follows the paper's schedule, `adaptation.ramp`."""

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainer.architectures import Network
from trainer.methods.adaptation import AdaptParams, Step, adapt, ramp
from trainer.run import RunContext, TrainResult


class Params(AdaptParams):
    discriminator_hidden: int = Field(256, ge=1, le=8192)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -strength backward."""
    return _ReverseGradient.apply(x, strength)


def discriminator(feature_dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 1),
    )  # fmt: skip


def run(ctx: RunContext, params: Params) -> TrainResult:

    def make_domain_loss(model: Network, _generator: torch.Generator):
        critic = discriminator(model.backbone.feature_dim, params.discriminator_hidden)

        def loss(step: Step) -> torch.Tensor:
            source, target = step.source_features, step.target_features
            features = reverse_gradient(torch.cat([source, target]), ramp(step.progress))
            domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))])
            logits = critic(features).squeeze(1)
            return F.binary_cross_entropy_with_logits(logits, domains.to(logits.device))

        return loss, critic

    return adapt(ctx, params.weight, make_domain_loss, adabn=params.adabn)
