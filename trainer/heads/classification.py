"""Single-label classification: a linear layer onto the classes, cross-entropy."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.card import ModelCard
from trainer.data import LabelledDataset, Split
from trainer.training import classify, standardisation


def build(feature_dim: int, dataset: LabelledDataset, _train: Split) -> nn.Module:
    return nn.Linear(feature_dim, len(dataset.labels))


def from_card(feature_dim: int, card: ModelCard) -> nn.Module:
    return nn.Linear(feature_dim, len(card.labels))


def loss(_head: nn.Module, logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


evaluate = classify


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)


def card_fields(dataset: LabelledDataset, _head: nn.Module) -> dict[str, Any]:
    return {"labels": list(dataset.labels)}


def fit_to_features(head: nn.Linear, features: torch.Tensor, y: torch.Tensor) -> float:
    """Set the head to a logistic regression on the features, L2-penalised on standardised
    features as scikit-learn's default (C = 1) is; returns its training accuracy."""
    mean, std, live = standardisation(features)
    standardised = (features - mean) / std * live
    weight = torch.zeros_like(head.weight, dtype=torch.float32, requires_grad=True)
    bias = torch.zeros_like(head.bias, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standardised @ weight.T + bias
        loss = F.cross_entropy(logits, y) + weight.pow(2).sum() / (2 * len(y))
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    scaled = weight.detach() / std * live  # the same logits from the raw features
    head.weight.copy_(scaled)
    head.bias.copy_(bias.detach() - scaled @ mean)
    return (head(features).argmax(1) == y).float().mean().item()
