"""The training loop that every method shares: batch, step, log, checkpoint, validate, stop.

A method hands `fit` a `Recipe` (the modules that train, the batches of an epoch, the loss of
one batch, how to validate and which metric decides); `fit` runs the job's epochs with its
optimiser, LR schedule (warm-up, cosine), gradient clipping and bf16 autocast on CUDA, reports
metrics (per epoch; with `log_every_steps`, also every N-th step's loss and learning rate) and
progress, checkpoints, and stops early when the monitored metric stops improving.
On several ranks (`trainer.distributed`) each step is the same global batch, shared out.
"""

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from trainer import distributed
from trainer.checkpoint import Interrupted
from trainer.run import RunContext
from trainer.training import (
    TrainerError,
    build_optimizer,
    compile_modules,
    lr_factor,
    to_device,
)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What a method hands the loop."""

    model: nn.Module  # every module whose weights change, heads included
    param_groups: list[dict]  # the optimiser's, with their own learning rates where they differ
    epoch_batches: Callable[[torch.Generator], Iterable[Any]]  # an epoch, in the generator's order
    steps_per_epoch: int
    batch_loss: Callable[[Any, float], torch.Tensor]  # (batch, share of training done in [0, 1])
    validate: Callable[[], dict[str, float]]
    monitor: str  # the validation metric that picks the best epoch
    mode: Literal["min", "max"]  # whether it is better low or high
    generator: torch.Generator  # the data order's, and whatever randomness a method draws from it
    frozen: Sequence[nn.Module] = ()  # kept in eval mode, so frozen BatchNorm keeps its statistics
    # Figures reported beside validation after every epoch, by (name, split): what a method
    # lets its user watch besides the monitored metric. They must change nothing.
    diagnose: Callable[[], dict[tuple[str, str], float]] | None = None


@dataclass(frozen=True)
class FitResult:
    step: int
    epochs_run: int
    best_epoch: int
    train_loss: float
    validation: dict[str, float]  # of the restored best epoch, else of the last


@dataclass
class Progress:
    """Where a run is: what a checkpoint keeps besides weights, optimiser, generators and the
    early-stopping state."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # in this epoch
    epoch_generator: torch.Tensor | None = None  # the generator as this epoch began
    loss_sum: float = 0.0  # of this epoch's batches so far
    train_loss: float = float("nan")  # of the last whole epoch
    stopped: bool = False  # early stopping ended training: a resumed run trains no more


@dataclass
class EarlyStopping:
    """Follows the monitored validation metric; with a patience, keeps the best epoch's weights
    and says when `patience` epochs have passed without improving on it."""

    metric: str
    mode: Literal["min", "max"]
    patience: int | None
    best_value: float | None = None
    best_epoch: int = 0
    best_validation: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None

    def should_stop(self, epoch: int, validation: dict[str, float], model: nn.Module) -> bool:
        value = validation[self.metric]
        improved = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if improved:
            self.best_value, self.best_epoch, self.best_validation = value, epoch, validation
            if self.patience is not None:
                self.best_state = copy.deepcopy(model.state_dict())
            return False
        return self.patience is not None and epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _BEST_FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in _BEST_FIELDS:
            setattr(self, name, state[name])


_BEST_FIELDS = ("best_value", "best_epoch", "best_validation", "best_state")


def fit(ctx: RunContext, recipe: Recipe) -> FitResult:
    """Train `recipe.model` for the job's epochs; resume from its checkpoint if there is one."""
    hp, events, device, model = ctx.spec.hyperparameters, ctx.events, ctx.device, recipe.model
    optimizer = build_optimizer(hp, recipe.param_groups)
    total_steps = recipe.steps_per_epoch * hp.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(hp, step, total_steps)
    )
    clipped = [p for group in recipe.param_groups for p in group["params"]]
    bf16 = hp.mixed_precision == "bf16" or (hp.mixed_precision == "auto" and device.type == "cuda")
    stopper = EarlyStopping(recipe.monitor, recipe.mode, hp.early_stopping_patience)
    checkpointing = ctx.checkpointing
    distributed.seed_ranks(hp.seed)
    progress, batches = _resume(ctx, recipe, optimizer, schedule, stopper)
    if hp.channels_last:
        model.to(memory_format=torch.channels_last)
    if hp.compile:
        compile_modules(model)
    # The batch loss, its gradients averaged over the ranks (only with several of them).
    step_loss = distributed.data_parallel(model, recipe.batch_loss, device)
    finish = False  # asked to end training where it is, keeping the model

    validation = stopper.best_validation  # a run resumed once it had stopped early trains none
    for epoch in range(progress.epoch, hp.epochs + 1) if not progress.stopped else ():
        progress.epoch = epoch
        model.train()
        for module in recipe.frozen:
            module.eval()
        batches = batches or _new_epoch(recipe, progress)
        for batch in batches:
            # batch: this rank's share of it (alone, all of it), on the device
            shard, weight = distributed.shard(batch)
            shard = to_device(shard, device, hp.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_loss(shard, progress.step / total_steps) * weight
            # step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(clipped, hp.grad_clip_norm)
            optimizer.step()
            schedule.step()
            progress.step, progress.batches_done = progress.step + 1, progress.batches_done + 1
            asked_to_stop = checkpointing is not None and checkpointing.stop.is_set()
            asked_to_finish = checkpointing is not None and checkpointing.finish.is_set()
            batch_mean_loss, stop, finish = distributed.step_outcome(
                loss, asked_to_stop, asked_to_finish
            )
            progress.loss_sum += batch_mean_loss
            # log
            if hp.log_every_steps is not None and progress.step % hp.log_every_steps == 0:
                learning_rate = schedule.get_last_lr()[0]
                events.metric("step_loss", "train", batch_mean_loss, progress.step, epoch)
                events.metric("learning_rate", "train", learning_rate, progress.step, epoch)
            events.progress(progress.step, epoch, total_steps)
            # checkpoint
            if checkpointing and (progress.step % checkpointing.every_steps == 0 or stop):
                run = vars(progress) | stopper.state_dict()
                _save_checkpoint(ctx, recipe, optimizer, schedule, run, epoch, {})
                if stop:
                    events.log(f"stopped at a checkpoint at step {progress.step}")
                    raise Interrupted(f"stopped at step {progress.step}")
            if finish:
                break
        batches = None
        # validate
        progress.train_loss = progress.loss_sum / max(1, progress.batches_done)
        progress.loss_sum, progress.batches_done = 0.0, 0
        validation = distributed.on_main(recipe.validate)  # every rank gets rank 0's figures
        if finish:  # the kept weights' figures, for its card: no epoch's point (not reported)
            events.log(f"asked to end training at step {progress.step}: the model is kept")
            break
        events.metric("loss", "train", progress.train_loss, progress.step, epoch)
        for name, value in validation.items():
            events.metric(name, "validation", value, progress.step, epoch)
        if recipe.diagnose is not None:
            for (name, split), value in distributed.on_main(recipe.diagnose).items():
                events.metric(name, split, value, progress.step, epoch)
        events.progress(progress.step, epoch, total_steps, force=True)
        # stop
        stopping = stopper.should_stop(epoch, validation, model)
        if checkpointing:  # the epoch's checkpoint, with its figures: one a user may start from
            run = vars(progress) | {"epoch": epoch + 1, "stopped": stopping} | stopper.state_dict()
            _save_checkpoint(ctx, recipe, optimizer, schedule, run, epoch, validation)
        if stopping:
            best = stopper.best_epoch
            events.log(f"early stopping after epoch {epoch}: best {recipe.monitor} at epoch {best}")
            break

    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
        value = f"{recipe.monitor} {stopper.best_value:.4f}"
        events.log(f"restored the weights of epoch {stopper.best_epoch} ({value})")
        validation = stopper.best_validation
    return FitResult(
        progress.step, progress.epoch, stopper.best_epoch, progress.train_loss, validation
    )


def _save_checkpoint(
    ctx: RunContext,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    run: dict[str, Any],
    epoch: int,
    validation: dict[str, float],
) -> None:
    """What `_resume` needs to go on from this step; `run`: progress and early stopping. The
    supervisor hears of it with the epoch it was taken in and, at an epoch's end, its
    validation figures: what the job's retention policy keeps checkpoints by."""
    state = {
        "model": recipe.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": distributed.rng_states(),
        "generator": recipe.generator.get_state(),
        "run": run,
    }
    path = ctx.checkpointing.save(state, run["step"])
    if distributed.WORLD.main:
        ctx.events.emit(
            "checkpoint",
            step=run["step"],
            epoch=epoch,
            file=path.name,
            size_bytes=path.stat().st_size,
            metrics=validation,
            monitor=recipe.monitor,
            mode=recipe.mode,
        )


def _new_epoch(recipe: Recipe, progress: Progress) -> Iterator[Any]:
    """A new epoch's batches; the generator's state is kept, so that a resumed run can draw
    the same order again."""
    progress.epoch_generator = recipe.generator.get_state()
    return iter(recipe.epoch_batches(recipe.generator))


def _resume(
    ctx: RunContext,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    stopper: EarlyStopping,
) -> tuple[Progress, Iterator[Any] | None]:
    """Where to start: the beginning, or the job's checkpoint. From a checkpoint: its weights,
    optimiser, schedule, early-stopping state and generators, and, when it was taken
    mid-epoch, the rest of that epoch (its order drawn again from the generator as the epoch
    began, the batches done skipped). A job started from another job's checkpoint
    (`base_checkpoint_id`) takes its weights alone: its own spec decides the rest."""
    saved = ctx.checkpointing.load() if ctx.checkpointing else None
    if saved is None:
        weights = ctx.checkpointing.start_weights() if ctx.checkpointing else None
        if weights is not None:
            _load_start_weights(recipe.model, weights)
            ctx.events.log("started from the weights of its base_checkpoint_id")
        return Progress(), None
    recipe.model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    run = dict(saved["run"])
    stopper.load_state_dict({name: run.pop(name) for name in _BEST_FIELDS})
    progress = Progress(**run)
    ctx.events.log(f"resumed from the checkpoint at step {progress.step} (epoch {progress.epoch})")
    ctx.events.emit("resumed", step=progress.step, epoch=progress.epoch)
    batches = None
    if progress.batches_done > 0:
        recipe.generator.set_state(progress.epoch_generator)
        batches = iter(recipe.epoch_batches(recipe.generator))
        for _ in range(progress.batches_done):
            next(batches)
    recipe.generator.set_state(saved["generator"])
    distributed.set_rng_states(saved["torch_rng"])
    return progress, batches


def _load_start_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # another shape or other layers: the spec built another model
        raise TrainerError(
            "incompatible_checkpoint",
            f"the weights of base_checkpoint_id do not fit this job's model: {error}",
        ) from error
