"""The building blocks of training that methods and the loop (`trainer.loop`) share: seeds,
the device, optimiser and LR schedule, an epoch's batches, evaluation and freezing."""

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import Split
from trainer.spec import Hyperparameters


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


def resolve_device(requested: str, processes: int = 1) -> torch.device:
    """The device type a job trains on; with several processes on CUDA, one GPU each."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device_unavailable", "the job asks for cuda; this worker has no GPU")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and processes > torch.cuda.device_count():
        message = (
            f"the job asks for {processes} processes, one GPU each; "
            f"this worker has {torch.cuda.device_count()}"
        )
        raise TrainerError("device_unavailable", message)
    return device


def to_device(
    batch: tuple[torch.Tensor, ...], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, ...]:
    """A batch onto the training device: on CUDA through pinned memory, without blocking, so
    the copy overlaps the work queued before it (a method's own `.to(device)` is then a no-op).
    On the CPU the tensors stay where they are. Images go channels-last when asked."""
    if channels_last:
        batch = tuple(
            t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in batch
        )
    if device.type != "cuda":
        return batch
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in batch)


def compile_modules(model: nn.Module) -> None:
    """`torch.compile` in place (the weights' names unchanged) each module that a method calls:
    the model, or each member of a container of modules, which is never called itself."""
    called = model.children() if isinstance(model, nn.ModuleList | nn.ModuleDict) else [model]
    for module in called:
        module.compile()


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


def batch_sizes(examples: int, batch_size: int) -> list[int]:
    """The sizes of an epoch's batches: a last batch of one example joins the one before it, as
    BatchNorm cannot normalise a single example's features."""
    whole, rest = divmod(examples, batch_size)
    sizes = [batch_size] * whole + ([rest] if rest else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [batch_size + 1]
    return sizes


def batches_per_epoch(examples: int, batch_size: int) -> int:
    return max(1, len(batch_sizes(examples, batch_size)))


def batch_order(examples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """An epoch's example indices, shuffled, in batches of `batch_sizes`."""
    order = torch.randperm(examples, generator=generator)
    return list(order.split(batch_sizes(examples, batch_size)))


def shuffled_batches(
    split: Split, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for index in batch_order(len(split), batch_size, generator):
        yield split.x[index], split.y[index]


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters() if p.requires_grad]


@torch.no_grad()
def classify(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict:
    """Mean cross-entropy, accuracy and macro-F1 of a classifier over a split. Macro-F1 is the
    unweighted mean of the per-class F1 over the classes that occur in the split or in its
    predictions (scikit-learn's), so that a rare class weighs as much as a common one."""
    from sklearn.metrics import f1_score

    model.eval()
    total_loss, predicted = 0.0, []
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        predicted.append(logits.argmax(dim=1).cpu())
    predicted_labels = torch.cat(predicted).numpy()
    y = split.y.numpy()
    return {
        "loss": total_loss / len(split),
        "accuracy": float((predicted_labels == y).mean()),
        "macro_f1": float(f1_score(y, predicted_labels, average="macro", zero_division=0)),
    }


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


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The features' mean, standard deviation and which of them vary: a feature that never
    changes (e.g. a ReLU never active) gets no weight."""
    mean, std = features.mean(0), features.std(0, correction=0)
    live = std > 1e-6
    return mean, torch.where(live, std, torch.ones_like(std)), live
