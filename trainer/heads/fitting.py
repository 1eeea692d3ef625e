"""Fitting a linear head to frozen features by L-BFGS on an L2-penalised likelihood, as
scikit-learn's logistic regression (C = 1) does on standardised features: the LP-FT fit of
the heads whose outputs are logits (classification, multilabel)."""

from collections.abc import Callable

import torch
from torch import nn

from trainer.training import standardisation


def fit_logistic(
    head: nn.Linear,
    features: torch.Tensor,
    y: torch.Tensor,
    likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Set `head` to minimise `likelihood(logits, y)` (a mean over the examples) plus the L2
    penalty, on standardised features; the head then takes the raw features."""
    mean, std, live = standardisation(features)
    standardised = (features - mean) / std * live
    weight = torch.zeros_like(head.weight, dtype=torch.float32, requires_grad=True)
    bias = torch.zeros_like(head.bias, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standardised @ weight.T + bias
        loss = likelihood(logits, y) + weight.pow(2).sum() / (2 * len(y))
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    scaled = weight.detach() / std * live  # the same logits from the raw features
    head.weight.copy_(scaled)
    head.bias.copy_(bias.detach() - scaled @ mean)
