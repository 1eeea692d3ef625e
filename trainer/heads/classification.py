"""Single-label classification: a linear layer onto the classes, cross-entropy."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.card import ModelCard
from trainer.data import LabelledDataset, Split
from trainer.heads.fitting import fit_logistic
from trainer.training import classify


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
    """Set the head to a logistic regression on the features; returns its training
    accuracy."""
    fit_logistic(head, features, y, F.cross_entropy)
    return (head(features).argmax(1) == y).float().mean().item()
