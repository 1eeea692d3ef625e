"""Multi-label classification: each example has a set of labels, possibly empty. A linear
layer gives a logit per label, trained with binary cross-entropy; an example has a label
where its probability reaches that label's threshold.

Thresholds start at 0.5 (what training validates with) and are then tuned on the validation
split, each label's to the value that maximises its F1 there (`tune_thresholds`): with a
rare label, 0.5 is rarely where F1 peaks. The card keeps them; predict applies them.

Figures: `micro_f1` (F1 over every example-label decision), `macro_f1` (the mean of the
labels' F1, so that a rare label weighs as much as a common one), `subset_accuracy` (the
share of examples whose whole set is right); `loss` is the mean binary cross-entropy."""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.card import ModelCard
from trainer.data import LabelledDataset, Split
from trainer.heads.fitting import fit_logistic

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # candidates for tuning


class MultilabelHead(nn.Module):
    def __init__(self, feature_dim: int, labels: int, thresholds: list[float] | None) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, labels)
        # From the card, not the weights: tuned after training, with the labels they are for.
        default = [0.5] * labels
        self.register_buffer("thresholds", torch.tensor(thresholds or default), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def build(feature_dim: int, dataset: LabelledDataset, _train: Split) -> MultilabelHead:
    return MultilabelHead(feature_dim, len(dataset.labels), None)


def from_card(feature_dim: int, card: ModelCard) -> MultilabelHead:
    return MultilabelHead(feature_dim, len(card.labels), card.thresholds)


def loss(_head: nn.Module, logits: torch.Tensor, y: torch.Tensor, smoothing: float):
    return F.binary_cross_entropy_with_logits(logits, y * (1 - smoothing) + smoothing / 2)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits)


@torch.no_grad()
def _logits(model: nn.Module, split: Split, batch_size: int, device: torch.device):
    model.eval()
    return torch.cat([
        model(split.x[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, len(split), batch_size)
    ])  # fmt: skip


def _f1(y: np.ndarray, predicted: np.ndarray, average: str | None) -> Any:
    from sklearn.metrics import f1_score

    return f1_score(y, predicted, average=average, zero_division=0)


def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    logits = _logits(model, split, batch_size, device)
    predicted = (torch.sigmoid(logits) >= model.head.thresholds.cpu()).numpy()
    y = split.y.numpy().astype(bool)
    return {
        "loss": F.binary_cross_entropy_with_logits(logits, split.y.float()).item(),
        "micro_f1": float(_f1(y, predicted, "micro")),
        "macro_f1": float(_f1(y, predicted, "macro")),
        "subset_accuracy": float((predicted == y).all(axis=1).mean()),
    }


def tune_thresholds(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> str:
    """Set each label's threshold to the one of THRESHOLD_GRID that maximises its F1 on
    `split` (the validation split; ties go to the one nearest 0.5); a label that the split
    never has keeps 0.5. Returns what was done, for the job's events."""
    probabilities_ = torch.sigmoid(_logits(model, split, batch_size, device)).numpy()
    y = split.y.numpy().astype(bool)
    thresholds = []
    for label in range(y.shape[1]):
        if not y[:, label].any():
            thresholds.append(0.5)
            continue
        scores = [_f1(y[:, label], probabilities_[:, label] >= t, "binary") for t in THRESHOLD_GRID]
        best = max(zip(scores, -abs(THRESHOLD_GRID - 0.5), THRESHOLD_GRID, strict=True))
        thresholds.append(float(best[2]))
    head = model.head
    head.thresholds.copy_(torch.tensor(thresholds, device=head.thresholds.device))
    shown = ", ".join(f"{t:g}" for t in thresholds)
    return f"per-label thresholds tuned on the {len(split)} validation examples: {shown}"


def card_fields(dataset: LabelledDataset, head: MultilabelHead) -> dict[str, Any]:
    thresholds = [round(t, 4) for t in head.thresholds.tolist()]  # as tuned, not float32's
    return {"labels": list(dataset.labels), "thresholds": thresholds}


def _summed_over_labels(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each label's likelihood weighs as one logistic regression's, against the penalty."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)


def fit_to_features(head: MultilabelHead, features: torch.Tensor, y: torch.Tensor) -> float:
    """Set the head to one logistic regression per label on the features; returns its
    training micro-F1 at the head's thresholds."""
    fit_logistic(head.linear, features, y, _summed_over_labels)
    predicted = (torch.sigmoid(head(features)) >= head.thresholds).cpu().numpy()
    return float(_f1(y.cpu().numpy().astype(bool), predicted, "micro"))
