"""The training loop that every method shares, and its building blocks.

A method supplies the modules, the loss of one batch and a validation function; `fit` runs
the epochs with the job's optimiser, LR schedule (warm-up, cosine), gradient clipping, bf16
autocast on CUDA and early stopping with best-epoch restore, and reports metrics (per epoch;
with `log_every_steps`, also every N-th step's loss and learning rate) and progress.
On several ranks (`trainer.distributed`) each step is the same global batch, shared out.
"""

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer import distributed
from trainer.checkpoint import Interrupted
from trainer.data import Split
from trainer.run import RunContext
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
    s = _RunState()
    checkpointing = ctx.checkpointing
    distributed.seed_ranks(hp.seed)
    saved = checkpointing.load() if checkpointing else None
    if saved is not None:
        s = _resume(saved, model, optimizer, schedule)
        events.log(f"resumed from the checkpoint at step {s.step} (epoch {s.epoch})")
        events.emit("resumed", step=s.step, epoch=s.epoch)
    if hp.channels_last:
        model.to(memory_format=torch.channels_last)
    if hp.compile:
        compile_modules(model)
    # The batch loss, its gradients averaged over the ranks (only with several of them).
    step_loss = distributed.data_parallel(model, batch_loss, device)

    def save_checkpoint() -> None:
        checkpointing.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "torch_rng": distributed.rng_states(),
                "generator": generator.get_state(),
                "run": s.as_dict(),
            }
        )

    for epoch in range(s.epoch, hp.epochs + 1):
        s.epoch = epoch
        model.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its statistics
        if s.batches_done == 0:
            s.epoch_generator = generator.get_state()
        batches = iter(epoch_batches(_at(generator, s.epoch_generator)))
        if s.batches_done:  # the epoch's order again; skip what the checkpoint had done
            for _ in range(s.batches_done):
                next(batches)
            generator.set_state(saved["generator"])
            distributed.set_rng_states(saved["torch_rng"])
        for batch in batches:
            shard, weight = distributed.shard(batch)  # this rank's share; alone, all of it
            shard = to_device(shard, device, hp.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_loss(shard, s.step / total_steps) * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(clipped, hp.grad_clip_norm)
            optimizer.step()
            schedule.step()
            s.step, s.batches_done = s.step + 1, s.batches_done + 1
            asked_to_stop = checkpointing is not None and checkpointing.stop.is_set()
            batch_mean_loss, stop = distributed.step_outcome(loss, asked_to_stop)
            s.loss_sum += batch_mean_loss
            if hp.log_every_steps is not None and s.step % hp.log_every_steps == 0:
                events.metric("step_loss", "train", batch_mean_loss, s.step, s.epoch)
                events.metric("learning_rate", "train", schedule.get_last_lr()[0], s.step, s.epoch)
            events.progress(s.step, s.epoch, total_steps)
            if checkpointing and (s.step % checkpointing.every_steps == 0 or stop):
                save_checkpoint()
                if stop:
                    events.log(f"stopped at a checkpoint at step {s.step}")
                    raise Interrupted(f"stopped at step {s.step}")
        s.train_loss = s.loss_sum / max(1, s.batches_done)
        s.loss_sum, s.batches_done = 0.0, 0
        validation = distributed.on_main(validate)  # every rank gets rank 0's figures
        events.metric("loss", "train", s.train_loss, s.step, s.epoch)
        for name, value in validation.items():
            events.metric(name, "validation", value, s.step, s.epoch)
        events.progress(s.step, s.epoch, total_steps, force=True)

        value = validation[metric]
        improved = s.best_value is None or (
            value < s.best_value if mode == "min" else value > s.best_value
        )
        if improved:
            s.best_value, s.best_epoch, s.best_validation = value, s.epoch, validation
            if hp.early_stopping_patience is not None:
                s.best_state = copy.deepcopy(model.state_dict())
        elif (
            hp.early_stopping_patience is not None
            and s.epoch - s.best_epoch >= hp.early_stopping_patience
        ):
            events.log(
                f"early stopping after epoch {s.epoch}: best {metric} at epoch {s.best_epoch}"
            )
            break

    if s.best_state is not None:
        model.load_state_dict(s.best_state)
        events.log(f"restored the weights of epoch {s.best_epoch} ({metric} {s.best_value:.4f})")
        validation = s.best_validation
    return FitResult(s.step, s.epoch, s.best_epoch, s.train_loss, validation)


@dataclass
class _RunState:
    """Where a run is: what a checkpoint keeps besides weights, optimiser and generators."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # in this epoch
    epoch_generator: torch.Tensor | None = None  # the generator as this epoch began
    loss_sum: float = 0.0
    train_loss: float = float("nan")
    best_value: float | None = None
    best_epoch: int = 0
    best_validation: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _resume(saved: dict, model: nn.Module, optimizer, schedule) -> _RunState:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    return _RunState(**saved["run"])


def _at(generator: torch.Generator, state: torch.Tensor) -> torch.Generator:
    generator.set_state(state)
    return generator


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
