"""Supervised classification: from scratch or from a base model, with freezing strategies
(`backbone` is a linear probe, `partial` trains the top N blocks) and separate learning rates
for head and backbone. Hugging Face encoders can instead train LoRA adapters, merged into the
weights at the end."""

from typing import Literal

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.architectures import Network, hf_encoder
from trainer.card import Adapter, ModelCard
from trainer.data import Split, splits_for
from trainer.loop import Recipe, fit
from trainer.run import RunContext, TrainResult
from trainer.training import (
    batches_per_epoch,
    classify,
    freeze,
    seed_everything,
    shuffled_batches,
    trainable_parameters,
)
from trainer.trunk import start_trunk


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freeze: Literal["none", "backbone", "partial"] = "none"
    trainable_blocks: int = Field(1, ge=0, le=1000, description="With `partial`: top N blocks.")
    head_learning_rate: float | None = Field(None, gt=0, le=10, description="Default: LR.")
    backbone_learning_rate: float | None = Field(None, gt=0, le=10, description="Default: LR.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    lora_rank: int | None = Field(
        None, ge=1, le=256, description="`hf_encoder` only: train LoRA adapters of this rank."
    )
    lora_alpha: float = Field(16.0, gt=0, le=1024)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_merge: bool = Field(
        True,
        description="`false`: keep the adapter apart: the model stores only the adapter and "
        "head, and is rebuilt on its base directory when loaded (the download carries the "
        "adapter in peft's format too).",
    )


def run(ctx: RunContext, params: Params) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    data = spec.data
    dataset, train, validation, test = splits_for(data.train, data.validation, data.test, hp.seed)
    trunk = start_trunk(ctx, dataset, train)
    head = nn.Linear(trunk.backbone.feature_dim, len(dataset.labels))
    base = ctx.base
    if base and base.card.task == "classification" and base.card.labels == list(dataset.labels):
        head.load_state_dict({"weight": base.state["head.weight"], "bias": base.state["head.bias"]})
    if params.lora_rank is not None:
        hf_encoder.attach_lora(
            trunk.backbone, params.lora_rank, params.lora_alpha, params.lora_dropout
        )
    model = Network(trunk.normalize, trunk.backbone, head).to(device)
    frozen = freeze(trunk.backbone, params.freeze, params.trainable_blocks)
    train, validation, test = (Split(s.y, trunk.inputs(s)) for s in (train, validation, test))

    groups = [
        {"params": list(head.parameters()), "lr": params.head_learning_rate or hp.learning_rate}
    ]
    backbone_params = trainable_parameters(trunk.backbone)
    if backbone_params:
        lr = params.backbone_learning_rate or hp.learning_rate
        groups.append({"params": backbone_params, "lr": lr})
    ctx.events.log(
        f"supervised: {len(train)} train, {len(validation)} validation, {len(test)} test "
        f"examples; {len(frozen)} frozen blocks; on {device}"
    )

    def batch_loss(batch, _progress: float):
        x, y = (t.to(device) for t in batch)
        return F.cross_entropy(model(x), y, label_smoothing=params.label_smoothing)

    recipe = Recipe(
        model=model,
        param_groups=groups,
        epoch_batches=lambda g: shuffled_batches(train, hp.batch_size, g),
        steps_per_epoch=batches_per_epoch(len(train), hp.batch_size),
        batch_loss=batch_loss,
        validate=lambda: classify(model, validation, hp.batch_size, device),
        monitor="accuracy",
        mode="max",
        generator=generator,
        frozen=frozen,
    )
    result = fit(ctx, recipe)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = None
    if params.lora_rank is not None:
        if params.lora_merge:
            hf_encoder.merge_lora(trunk.backbone)
        else:
            adapter = Adapter(rank=params.lora_rank, alpha=params.lora_alpha,
                              dropout=params.lora_dropout)  # fmt: skip
    tested = classify(model, test, hp.batch_size, device)
    ctx.events.metric("accuracy", "test", tested["accuracy"], result.step, result.epochs_run)
    metrics = {
        "train_loss": result.train_loss,
        "validation_loss": result.validation["loss"],
        "validation_accuracy": result.validation["accuracy"],
        "test_loss": tested["loss"],
        "test_accuracy": tested["accuracy"],
        "best_epoch": result.best_epoch,
        "train_examples": len(train),
        "trained_parameters": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    labels = list(dataset.labels)
    card = ModelCard(
        **dict(trunk.card), task="classification", labels=labels, adapter=adapter, metrics=metrics
    )
    return TrainResult(model.cpu(), card)
