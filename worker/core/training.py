"""The training loop that every method shares, and its building blocks.

A method supplies the modules, the loss of one batch and a validation function; `fit` runs
the epochs with the job's optimiser, LR schedule (warm-up, cosine), gradient clipping, bf16
autocast on CUDA and early stopping with best-epoch restore, and reports metrics and progress.
"""

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.core.data import Split
from worker.core.run import RunContext
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


def build_optimizer(hp: Hyperparameters, param_groups: list[dict]) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups, lr=hp.learning_rate, momentum=0.9, weight_decay=hp.weight_decay
        )
    optimizer = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return optimizer(param_groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)


def lr_factor(hp: Hyperparameters, step: int, total_steps: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at `total_steps`."""
    if step < hp.warmup_steps:
        return (step + 1) / hp.warmup_steps
    if hp.lr_schedule == "constant":
        return 1.0
    progress = (step - hp.warmup_steps) / max(1, total_steps - hp.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def shuffled_batches(
    split: Split, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(split), generator=generator)
    for index in order.split(batch_size):
        yield split.x[index], split.y[index]


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters() if p.requires_grad]


@torch.no_grad()
def classify(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    """Mean cross-entropy and accuracy of a classifier over a split."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
    return {"loss": total_loss / len(split), "accuracy": correct / len(split)}


@dataclass(frozen=True)
class FitResult:
    step: int
    epochs_run: int
    best_epoch: int
    train_loss: float
    validation: dict[str, float]  # of the restored best epoch, else of the last


def fit(
    ctx: RunContext,
    model: nn.Module,
    param_groups: list[dict],
    epoch_batches: Callable[[torch.Generator], Iterable[Any]],
    steps_per_epoch: int,
    batch_loss: Callable[[Any, float], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    monitor: tuple[str, str],
    generator: torch.Generator,
    frozen: Iterable[nn.Module] = (),
) -> FitResult:
    """Train `model` (every module whose weights change, heads included) for the job's epochs.

    `batch_loss(batch, progress)` gets the share of training done so far, in [0, 1];
    `monitor` is a validation metric and "min" or "max", for early stopping.
    """
    hp, events, device = ctx.spec.hyperparameters, ctx.events, ctx.device
    frozen = list(frozen)
    optimizer = build_optimizer(hp, param_groups)
    clipped = [p for group in param_groups for p in group["params"]]
    total_steps = steps_per_epoch * hp.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(hp, step, total_steps)
    )
    bf16 = hp.mixed_precision == "bf16" or (hp.mixed_precision == "auto" and device.type == "cuda")
    metric, mode = monitor
    best_value, best_epoch, best_state, best_validation = None, 0, None, {}
    step, epoch, train_loss = 0, 0, float("nan")

    for epoch in range(1, hp.epochs + 1):
        model.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its statistics
        loss_sum, batches = 0.0, 0
        for batch in epoch_batches(generator):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = batch_loss(batch, step / total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(clipped, hp.grad_clip_norm)
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum, batches = loss_sum + loss.item(), batches + 1
            events.progress(step, epoch, total_steps)
        train_loss = loss_sum / max(1, batches)
        validation = validate()
        events.metric("loss", "train", train_loss, step, epoch)
        for name, value in validation.items():
            events.metric(name, "validation", value, step, epoch)
        events.progress(step, epoch, total_steps, force=True)

        value = validation[metric]
        improved = best_value is None or (
            value < best_value if mode == "min" else value > best_value
        )
        if improved:
            best_value, best_epoch, best_validation = value, epoch, validation
            if hp.early_stopping_patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        elif (
            hp.early_stopping_patience is not None
            and epoch - best_epoch >= hp.early_stopping_patience
        ):
            events.log(f"early stopping after epoch {epoch}: best {metric} at epoch {best_epoch}")
            break

    if best_state is not None:
        model.load_state_dict(best_state)
        events.log(f"restored the weights of epoch {best_epoch} ({metric} {best_value:.4f})")
        validation = best_validation
    return FitResult(step, epoch, best_epoch, train_loss, validation)


def freeze(backbone: nn.Module, strategy: str, trainable_blocks: int) -> list[nn.Module]:
    """Freeze the whole backbone (`backbone`), all but its top N blocks (`partial`), or
    nothing (`none`); returns the frozen modules."""
    if strategy == "none":
        return []
    blocks = backbone.blocks()
    frozen = blocks if strategy == "backbone" else blocks[: max(0, len(blocks) - trainable_blocks)]
    for module in frozen:
        module.requires_grad_(False)
    return frozen
