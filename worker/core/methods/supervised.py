"""Supervised classification with cross-entropy, from scratch or from a base model."""

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from worker.core.architectures import Classifier, build_classifier
from worker.core.data import LabelledDataset, Split, load_dataset
from worker.core.run import RunContext, TrainResult
from worker.core.training import build_optimizer, evaluate, seed_everything, shuffled_batches


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


def _split(ref: str | None, default: LabelledDataset, name: str) -> Split:
    return (load_dataset(ref) if ref else default).splits[name]


def _initial_model(ctx: RunContext, train: LabelledDataset) -> tuple[Classifier, str, dict]:
    if ctx.base is not None:
        card = ctx.base.card
        model = ctx.base.classifier
        if len(card["labels"]) != len(train.labels):
            model.head = nn.Linear(model.backbone.feature_dim, len(train.labels))
        return model, card["architecture"], card["params"]
    x = train.splits["train"].x
    channel_dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=channel_dims).tolist()
    std = x.std(dim=channel_dims).clamp_min(1e-6).tolist()
    spec = ctx.spec.model
    model = build_classifier(
        spec.architecture, spec.params, train.input_shape, len(train.labels), mean, std
    )
    return model, spec.architecture, spec.params


def run(ctx: RunContext) -> TrainResult:
    spec, events, device = ctx.spec, ctx.events, ctx.device
    hp = spec.hyperparameters
    params = Params.model_validate(spec.method.params)
    generator = seed_everything(hp.seed)

    dataset = load_dataset(spec.data.train)
    train = dataset.splits["train"]
    validation = _split(spec.data.validation, dataset, "validation")
    test = _split(spec.data.test, dataset, "test")
    model, architecture, arch_params = _initial_model(ctx, dataset)
    model.to(device)
    optimizer = build_optimizer(hp, model.parameters())
    steps_per_epoch = -(-len(train) // hp.batch_size)
    total_steps = steps_per_epoch * hp.epochs
    events.log(
        f"training {architecture} on {spec.data.train}: {len(train)} train, "
        f"{len(validation)} validation, {len(test)} test examples, {total_steps} steps on {device}"
    )

    step = 0
    for epoch in range(1, hp.epochs + 1):
        model.train()
        epoch_loss = 0.0
        for x, y in shuffled_batches(train, hp.batch_size, generator):
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=params.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            epoch_loss += loss.item() * len(y)
            events.progress(step, epoch, total_steps)
        val = evaluate(model, validation, hp.batch_size, device)
        events.metric("loss", "train", epoch_loss / len(train), step, epoch)
        events.metric("loss", "validation", val["loss"], step, epoch)
        events.metric("accuracy", "validation", val["accuracy"], step, epoch)
        events.progress(step, epoch, total_steps, force=True)

    test_metrics = evaluate(model, test, hp.batch_size, device)
    events.metric("accuracy", "test", test_metrics["accuracy"], step, hp.epochs)
    metrics = {
        "train_loss": epoch_loss / len(train),
        "validation_loss": val["loss"],
        "validation_accuracy": val["accuracy"],
        "test_loss": test_metrics["loss"],
        "test_accuracy": test_metrics["accuracy"],
    }
    return TrainResult(
        model.cpu(), architecture, arch_params, dataset.input_shape, dataset.labels, metrics
    )
