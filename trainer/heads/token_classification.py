"""Token tagging: a tag per word (entity tags in BIO, or plain tags), from a linear layer over
each position of a sequence backbone (`Network(per_token=True)`: `forward_sequence`).

Words are split into the tokenizer's pieces (`trainer.text.encode_words`); a word's tag is
trained and predicted at its first piece, and its later pieces, special tokens and padding
are ignored. A word past the model's `max_length` has no piece: it is neither trained on nor
scored (predict refuses an input that long).

Figures: `entity_f1` (seqeval's, entity level: an entity counts when its type and all its
words are right; plain tags are read as one entity per run of the same tag) and
`token_accuracy` (the share of words tagged right); `loss` is the mean cross-entropy over
words."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.card import ModelCard
from trainer.data import IGNORED, LabelledDataset, Split
from trainer.heads.fitting import fit_logistic
from trainer.trunk import Trunk


class TokenHead(nn.Module):
    def __init__(self, feature_dim: int, tags: list[str]) -> None:
        super().__init__()
        self.tags = tags  # their names: entity F1 reads their B-/I- prefixes
        self.linear = nn.Linear(feature_dim, len(tags))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def build(feature_dim: int, dataset: LabelledDataset, _train: Split) -> TokenHead:
    return TokenHead(feature_dim, list(dataset.labels))


def from_card(feature_dim: int, card: ModelCard) -> TokenHead:
    return TokenHead(feature_dim, card.labels)


def inputs(trunk: Trunk, split: Split) -> Split:
    """Token ids, and each word's tag at its first piece (IGNORED elsewhere)."""
    ids, first = trunk.word_inputs(split)
    tags = split.y.gather(1, first.clamp_min(0).clamp_max(split.y.shape[1] - 1))
    return Split(torch.where(first >= 0, tags, IGNORED), ids)


def loss(_head: nn.Module, logits: torch.Tensor, y: torch.Tensor, smoothing: float):
    return F.cross_entropy(
        logits.flatten(0, 1), y.flatten(), ignore_index=IGNORED, label_smoothing=smoothing
    )


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def as_entities(tags: list[str]) -> list[str]:
    """BIO tags as they are; plain tags (`PER`, `O`) as BIO, a run of one tag one entity."""
    if all(t == "O" or t[:2] in ("B-", "I-") for t in tags):
        return tags
    return [
        "O" if t == "O" else ("I-" if i and tags[i - 1] == t else "B-") + t
        for i, t in enumerate(tags)
    ]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    from seqeval.metrics import f1_score

    model.eval()
    names = model.head.tags
    total_loss, words, right = 0.0, 0, 0
    truth, predicted = [], []
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        logits = model(x).float()
        scored = y != IGNORED
        total_loss += F.cross_entropy(
            logits[scored], y[scored], reduction="sum"
        ).item()  # fmt: skip
        best = logits.argmax(-1)
        words += int(scored.sum())
        right += int((best[scored] == y[scored]).sum())
        for row_y, row_best, row_scored in zip(y, best, scored, strict=True):
            truth.append([names[i] for i in row_y[row_scored].tolist()])
            predicted.append([names[i] for i in row_best[row_scored].tolist()])
    entity_f1 = f1_score(
        [as_entities(t) for t in truth], [as_entities(p) for p in predicted], zero_division=0
    )  # fmt: skip
    return {
        "loss": total_loss / max(words, 1),
        "entity_f1": float(entity_f1),
        "token_accuracy": right / max(words, 1),
    }


def card_fields(dataset: LabelledDataset, _head: nn.Module) -> dict[str, Any]:
    return {"labels": list(dataset.labels)}


def fit_to_features(head: TokenHead, features: torch.Tensor, y: torch.Tensor) -> float:
    """Set the head to a logistic regression of each word's tag on its first piece's
    features; returns its training token accuracy."""
    scored = y != IGNORED
    features, y = features[scored], y[scored]
    fit_logistic(head.linear, features, y, F.cross_entropy)
    return (head(features).argmax(-1) == y).float().mean().item()
