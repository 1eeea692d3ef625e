"""The loop the self-supervised methods share: a pretext head on the trunk, trained on the
unlabelled training split and validated with fixed randomness, so that the validation loss
of every epoch (and before training, epoch 0) compares."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainer.card import ModelCard
from trainer.data import Split, splits_for
from trainer.loop import Recipe, fit
from trainer.run import RunContext, TrainResult
from trainer.training import batches_per_epoch, seed_everything, shuffled_batches
from trainer.trunk import Trunk, start_trunk


@dataclass(frozen=True)
class Pretext:
    task: str
    head: Callable[[Trunk], nn.Module]
    # The training examples of a split: its inputs, or e.g. chunks of a token stream.
    examples: Callable[[Trunk, Split], torch.Tensor]
    # The loss of a batch of examples; `generator` drives corruption or augmentation.
    loss: Callable[[Trunk, nn.Module, torch.Tensor, torch.Generator | None], torch.Tensor]


def pretrain(ctx: RunContext, pretext: Pretext) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    data = spec.data
    dataset, train, validation, _test = splits_for(data.train, data.validation, None, hp.seed)
    trunk = start_trunk(ctx, dataset, train)
    head = pretext.head(trunk)
    model = nn.ModuleDict({"normalize": trunk.normalize, "backbone": trunk.backbone, "head": head})
    model.to(device)
    train_examples = pretext.examples(trunk, train)
    validation_examples = pretext.examples(trunk, validation)
    unlabelled = Split(torch.zeros(len(train_examples), dtype=torch.long), train_examples)
    ctx.events.log(
        f"{pretext.task}: {len(train_examples)} training and {len(validation_examples)} "
        f"validation examples on {device}"
    )

    def batch_loss(x: torch.Tensor, randomness: torch.Generator | None) -> torch.Tensor:
        return pretext.loss(trunk, head, x.to(device), randomness)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.eval()
        randomness = torch.Generator().manual_seed(0)
        total = 0.0
        for i in range(0, len(validation_examples), hp.batch_size):
            x = validation_examples[i : i + hp.batch_size]
            total += batch_loss(x, randomness).item() * len(x)
        return {"loss": total / len(validation_examples)}

    initial = validate()
    ctx.events.metric("loss", "validation", initial["loss"], 0, 0)
    recipe = Recipe(
        model=model,
        param_groups=[{"params": list(model.parameters())}],
        epoch_batches=lambda g: shuffled_batches(unlabelled, hp.batch_size, g),
        steps_per_epoch=batches_per_epoch(len(unlabelled), hp.batch_size),
        batch_loss=lambda batch, _progress: batch_loss(batch[0], generator),
        validate=validate,
        monitor="loss",
        mode="min",
        generator=generator,
    )
    result = fit(ctx, recipe)
    metrics = {
        "train_loss": result.train_loss,
        "initial_validation_loss": initial["loss"],
        "validation_loss": result.validation["loss"],
        "best_epoch": result.best_epoch,
    }
    card = ModelCard(**dict(trunk.card), task=pretext.task, metrics=metrics)
    return TrainResult(model.cpu(), card)
