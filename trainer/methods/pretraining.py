"""The loop the self-supervised methods share: a pretext head on the trunk, trained on the
unlabelled training split and validated with fixed randomness, so that the validation loss
of every epoch (and before training, epoch 0) compares. The card keeps both losses and the
optimizer steps run, from which `doubts` tells a fine-tune why its base may not help it."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trainer.card import ModelCard
from trainer.data import Split, dataset_name, splits_for
from trainer.loop import Recipe, fit
from trainer.run import RunContext, TrainResult
from trainer.streaming import Example, TextStream, stream_of
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
    # A pretext that trains from streamed datasets (`trainer.streaming`): the examples of a
    # batch of texts read from the stream, one each. None: it reads its data whole.
    text_examples: Callable[[Trunk, list[str]], torch.Tensor] | None = None


@dataclass(frozen=True)
class _Data:
    """What pretraining reads: the trunk (a fresh one fitted to the data), the validation
    examples, and the training batches."""

    trunk: Trunk
    validation_examples: torch.Tensor
    epoch_batches: Callable[[torch.Generator], Iterable]
    steps_per_epoch: int
    told: str  # what the log says of the training examples


def _in_memory(ctx: RunContext, pretext: Pretext) -> _Data:
    data, hp = ctx.spec.data, ctx.spec.hyperparameters
    dataset, train, validation, _test = splits_for(data.train, data.validation, None, hp.seed)
    trunk = start_trunk(ctx, dataset, train)
    train_examples = pretext.examples(trunk, train)
    unlabelled = Split(torch.zeros(len(train_examples), dtype=torch.long), train_examples)
    return _Data(
        trunk,
        pretext.examples(trunk, validation),
        lambda g: shuffled_batches(unlabelled, hp.batch_size, g),
        batches_per_epoch(len(unlabelled), hp.batch_size),
        f"{len(train_examples)} training",
    )


def _streamed(ctx: RunContext, pretext: Pretext, stream: TextStream) -> _Data:
    """A streamed dataset's training texts, read a batch at a time; a bounded sample of them
    trains a fresh tokenizer, and of its validation texts validates (`TextStream.sample`)."""
    hp = ctx.spec.hyperparameters
    trunk = start_trunk(ctx, stream.dataset(), stream.sample("train"))

    def encode(examples: list[Example]) -> tuple[torch.Tensor]:
        return (pretext.text_examples(trunk, [example.text for example in examples]),)

    return _Data(
        trunk,
        pretext.text_examples(trunk, list(stream.sample("validation").texts)),
        lambda g: stream.epoch_batches(g, hp.batch_size, encode),
        stream.steps_per_epoch(hp.batch_size),
        f"{stream.describe(hp.batch_size)},",
    )


def pretrain(ctx: RunContext, pretext: Pretext) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    stream = stream_of(dataset_name(spec.data.train))
    data = _in_memory(ctx, pretext) if stream is None else _streamed(ctx, pretext, stream)
    trunk, validation_examples = data.trunk, data.validation_examples
    head = pretext.head(trunk)
    model = nn.ModuleDict({"normalize": trunk.normalize, "backbone": trunk.backbone, "head": head})
    model.to(device)
    ctx.events.log(
        f"{pretext.task}: {data.told} and {len(validation_examples)} "
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
        epoch_batches=data.epoch_batches,
        steps_per_epoch=data.steps_per_epoch,
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
        "steps": result.step,
    }
    card = ModelCard(**dict(trunk.card), task=pretext.task, metrics=metrics)
    return TrainResult(model.cpu(), card)


# Measured on the digits' CNN with 5% of the labels (seed 0; scratch 60.3% after the default 10
# fine-tuning epochs, 73.6% after 15): 3 optimizer steps of autoencoder or contrastive
# pretraining left such fine-tunes below scratch (52.8%, 56.4%; 57.5% after 15 epochs), 20
# beat it but for contrastive after 15 epochs (71.9%), 40 beat it in every fine-tune tried.
FEW_STEPS = 40
SOLVED_LOSS = 1e-3  # a pretext loss this low before training: nothing left to learn from it
BARELY_MOVED = 0.95  # the validation loss kept this share of its value before training, or more


def doubts(card: ModelCard) -> list[str]:
    """Why a fine-tune from a model that pretraining made may end no better than one from
    scratch, as far as the model's card tells (nothing for other models)."""
    metrics = card.metrics
    if "initial_validation_loss" not in metrics or "validation_loss" not in metrics:
        return []
    before, after = metrics["initial_validation_loss"], metrics["validation_loss"]
    steps, found = metrics.get("steps"), []  # cards of before steps were kept have none
    if steps is not None and steps < FEW_STEPS:
        found.append(
            f"its {card.task} pretraining ran {steps} optimizer steps, fewer than {FEW_STEPS}: "
            "too few for its features to be worth more than a fresh network's (more epochs, or "
            "a smaller batch, run more)"
        )
    if before < SOLVED_LOSS:
        found.append(
            f"its {card.task} loss was {before:.2g} before pretraining: the pretext task was "
            "solved already, so its only gradient pushed apart examples already told apart"
        )
    elif after > BARELY_MOVED * before:
        found.append(
            f"its {card.task} validation loss barely moved ({before:.4g} -> {after:.4g}): the "
            "backbone is about where it started"
        )
    return found
