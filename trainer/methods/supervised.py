"""Supervised fine-tuning into the dataset's task (`trainer.heads`: classification,
regression, multilabel, forecasting): from scratch or from a base model, with freezing strategies
(`backbone` is a linear probe, `partial` trains the top N blocks) and separate learning rates
for head and backbone. Hugging Face encoders can instead train LoRA adapters, merged into the
weights at the end. A streamed text dataset (`trainer.streaming`) trains a batch at a time:
bounded samples of its splits train a fresh tokenizer, fit a head, validate and test.

A new head on a trained backbone is first fitted to the backbone's frozen features (LP-FT,
Kumar et al., 2022): a random head's first steps send random gradients into the backbone and
distort the features that made it worth starting from. With 5% of the digits labels, a
contrastive pretrain's frozen features gave 90% under a logistic regression, and fine-tuning
from a random head 82%; from a fitted one 91% (docs/RESULTS.md, bench.pretraining)."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from trainer.architectures import ARCHITECTURES, Network, lora
from trainer.architectures.lora import LoraParams
from trainer.card import ModelCard
from trainer.data import Split, dataset_name, splits_for
from trainer.heads import HEADS, TaskHead
from trainer.loop import Recipe, fit
from trainer.methods.pretraining import doubts
from trainer.run import RunContext, TrainResult
from trainer.streaming import Example, TextStream, stream_of
from trainer.training import (
    batches_per_epoch,
    freeze,
    seed_everything,
    shuffled_batches,
    trainable_parameters,
)
from trainer.trunk import Trunk, start_trunk


class Params(LoraParams):
    freeze: Literal["none", "backbone", "partial"] = "none"
    trainable_blocks: int = Field(1, ge=0, le=1000, description="With `partial`: top N blocks.")
    head_learning_rate: float | None = Field(None, gt=0, le=10, description="Default: LR.")
    backbone_learning_rate: float | None = Field(None, gt=0, le=10, description="Default: LR.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    head_init: Literal["auto", "probe", "random"] = Field(
        "auto",
        description="A new head's first weights: `probe` fits them to the frozen backbone's "
        "features of the training split (a logistic regression; regression: a ridge "
        "regression, its penalty by leave-one-out) before anything trains, "
        "`random` leaves them random; `auto`: `probe` when the backbone of a base model that "
        "tunery pretrained from fresh weights trains under a new head (not `hf_encoder`, "
        "pretrained elsewhere), else `random`.",
    )


PROBE_EXAMPLES = 10_000  # at most, drawn at random, that a head is fitted to


def pretrained_here(ctx: RunContext) -> bool:
    """Whether the backbone is a base model's whose architecture starts from fresh weights, so
    that all it knows is what tunery trained into it: where `head_init: auto` fits the head.

    There a fitted head kept what pretraining learned (bench.pretraining, 5% of the digits
    labels, seed 0: contrastive 85.3% from a random head, 93.3% from a fitted one; the
    causal_lm transformer on BBC News 48.0 -> 54.1 over three seeds). On an encoder pretrained
    elsewhere (`hf_encoder`), as an architecture or under a base model such as a SimCSE one,
    full fine-tuning did better from a random head (MiniLM, 2% of BBC News: 91.5 +- 1.0%
    against 81.5 +- 8.0% fitted, LoRA 89.8 against 77.9; after SimCSE 75.7 fitted, bench.hf_text).
    Why is not settled (seed 0, full fine-tuning from MiniLM: 92.7% from a random head, 73.2%
    fitted): fitted on the features with dropout on, as training sees them, 85.4%; fitted
    without standardising them, 85.9%; scaled down to a fresh head's norm after fitting, 91.8%,
    but that cost the digits' pretrains 5 to 11 points."""
    base = ctx.base
    return base is not None and ARCHITECTURES[base.card.architecture].pretrained is None


def fits_head(ctx: RunContext, params: Params, head_reused: bool) -> bool:
    """Whether the head starts fitted to the frozen features (`head_init`). A linear probe
    trains the head alone: nothing for a random one to distort."""
    if params.head_init != "auto":
        return params.head_init == "probe"
    return pretrained_here(ctx) and not head_reused and params.freeze != "backbone"


def reasons_to_doubt(ctx: RunContext, params: Params, head_reused: bool) -> list[str]:
    """Why this fine-tune is not expected to beat one from scratch, if it is not: what its base
    model's card tells of its pretraining, and a random head on a backbone pretrained here."""
    reasons = doubts(ctx.base.card) if ctx.base is not None else []
    distorted = params.head_init == "random" and params.freeze != "backbone"
    if pretrained_here(ctx) and distorted and not head_reused:
        reasons.append(
            "`head_init: random` on a trained backbone: the random head's first steps distort "
            "its features (with 5% of the digits labels, 10 fine-tuning epochs from a "
            "contrastive pretrain and a random head ended below scratch)"
        )
    return reasons


@torch.no_grad()
def fit_head(
    model: Network, task: TaskHead, train: Split, batch_size: int, device: torch.device, seed: int
) -> tuple[int, float]:
    """Fit `model.head` to the frozen features of (at most PROBE_EXAMPLES of) the training
    split, as the task's head fits (`TaskHead.fit_to_features`: a logistic regression, a
    ridge regression); returns the number of examples and the fit's training score."""
    if len(train) > PROBE_EXAMPLES:
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(train), generator=generator)[:PROBE_EXAMPLES]
        train = Split(train.y[chosen], train.x[chosen])
    model.eval()
    features = torch.cat([
        model.features(train.x[i : i + batch_size].to(device)).float()
        for i in range(0, len(train), batch_size)
    ])  # fmt: skip
    targets = model.head_targets(train.x.to(device), train.y.to(device))
    return len(train), task.fit_to_features(model.head, features, targets)


@dataclass(frozen=True)
class _Training:
    """The training batches of an epoch, and what the job says of them."""

    epoch_batches: Callable[[torch.Generator], Iterable]
    steps_per_epoch: int
    examples: int  # the training examples
    told: str


def _in_memory(train: Split, batch_size: int) -> _Training:
    return _Training(
        lambda g: shuffled_batches(train, batch_size, g),
        batches_per_epoch(len(train), batch_size),
        len(train),
        f"{len(train)} train",
    )


def _streamed(stream: TextStream, trunk: Trunk, task: TaskHead, batch_size: int) -> _Training:
    """A streamed dataset's training examples, read, labelled and encoded a batch at a time."""

    def encode(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = task.inputs(trunk, stream.split(examples))
        return batch.x, batch.y

    return _Training(
        lambda g: stream.epoch_batches(g, batch_size, encode),
        stream.steps_per_epoch(batch_size),
        stream.train_rows(),
        stream.describe(batch_size),
    )


def run(ctx: RunContext, params: Params) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    data = spec.data
    stream = stream_of(dataset_name(data.train))
    if stream is None:
        dataset, train, validation, test = splits_for(
            data.train, data.validation, data.test, hp.seed, data.context_length, data.horizon
        )
    else:  # bounded samples: `train`'s trains a fresh tokenizer and fits a head, never batches
        dataset = stream.dataset()
        train, validation, test = (stream.sample(p) for p in ("train", "validation", "test"))
    trunk = start_trunk(ctx, dataset, train)
    task = HEADS[dataset.task]
    head = task.build(trunk.backbone.feature_dim, dataset, train)
    base = ctx.base
    fields = task.card_fields(dataset, head)
    head_reused = bool(
        base
        and base.card.task == dataset.task
        and all(getattr(base.card, name) == fields[name] for name in task.identity)
    )
    if head_reused:  # the same labels (or targets, scaled alike): the base's head goes on
        head.load_state_dict({k.removeprefix("head."): v for k, v in base.state.items()
                              if k.startswith("head.")})  # fmt: skip
    lora.attach(trunk.backbone, params)
    model = Network(trunk.normalize, trunk.backbone, head, task.per_token).to(device)
    frozen = freeze(trunk.backbone, params.freeze, params.trainable_blocks)
    train, validation, test = (task.inputs(trunk, s) for s in (train, validation, test))
    for reason in reasons_to_doubt(ctx, params, head_reused):
        ctx.events.log(f"warning: this fine-tune may end no better than one from scratch: {reason}")
    if fits_head(ctx, params, head_reused):
        fitted, score = fit_head(model, task, train, hp.batch_size, device, hp.seed)
        ctx.events.log(
            f"head fitted to the backbone's frozen features of {fitted} training examples "
            f"({task.fit_description}, training {task.fit_score} {score:.3f}) before fine-tuning"
        )

    groups = [
        {"params": list(head.parameters()), "lr": params.head_learning_rate or hp.learning_rate}
    ]
    backbone_params = trainable_parameters(trunk.backbone)
    if backbone_params:
        lr = params.backbone_learning_rate or hp.learning_rate
        groups.append({"params": backbone_params, "lr": lr})
    training = (
        _in_memory(train, hp.batch_size)
        if stream is None
        else _streamed(stream, trunk, task, hp.batch_size)
    )
    ctx.events.log(
        f"supervised: {training.told}, {len(validation)} validation, {len(test)} test "
        f"examples; {len(frozen)} frozen blocks; on {device}"
    )

    def batch_loss(batch, _progress: float):
        x, y = (t.to(device) for t in batch)
        return task.loss(head, model(x), y, params.label_smoothing)

    recipe = Recipe(
        model=model,
        param_groups=groups,
        epoch_batches=training.epoch_batches,
        steps_per_epoch=training.steps_per_epoch,
        batch_loss=batch_loss,
        validate=lambda: task.evaluate(model, validation, hp.batch_size, device),
        monitor=task.monitor,
        mode=task.mode,
        generator=generator,
        frozen=frozen,
    )
    result = fit(ctx, recipe)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = lora.finish(trunk.backbone, params)
    validated = result.validation
    if task.calibrate is not None:
        ctx.events.log(task.calibrate(model, validation, hp.batch_size, device))
        validated = task.evaluate(model, validation, hp.batch_size, device)
    tested = task.evaluate(model, test, hp.batch_size, device)
    for name in task.validation_metrics[1:]:  # the test split's figures, as validation's
        ctx.events.metric(name, "test", tested[name], result.step, result.epochs_run)
    metrics = {
        "train_loss": result.train_loss,
        **{f"validation_{name}": value for name, value in validated.items()},
        **{f"test_{name}": value for name, value in tested.items()},
        "best_epoch": result.best_epoch,
        "train_examples": training.examples,
        "trained_parameters": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    card = ModelCard(
        **dict(trunk.card), task=dataset.task, **task.card_fields(dataset, head), adapter=adapter,
        metrics=metrics,
    )  # fmt: skip
    return TrainResult(model.cpu(), card)
