"""Building blocks shared by the training methods: seeding, devices, optimisers, batches."""

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.core.data import Split
from worker.core.spec import Hyperparameters


class TrainerError(Exception):
    """A failure that retrying cannot fix; `error_type` is reported on the job."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device_unavailable", "the job asks for cuda; this worker has no GPU")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def build_optimizer(hp: Hyperparameters, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=hp.learning_rate, momentum=0.9, weight_decay=hp.weight_decay
        )
    optimizer = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return optimizer(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)


def shuffled_batches(
    split: Split, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(split), generator=generator)
    for index in order.split(batch_size):
        yield split.x[index], split.y[index]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
    return {"loss": total_loss / len(split), "accuracy": correct / len(split)}
