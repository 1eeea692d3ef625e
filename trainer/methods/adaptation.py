"""The loop all domain-adaptation methods share: each step classifies a labelled source batch
and aligns its features with an unlabelled target batch through the method's domain loss.

Every method, the `source_only` baseline included, normalises the same way, so that a gain
over the baseline is the domain loss's and not BatchNorm's: in training each domain's batches
are normalised with their own statistics while the running statistics stay the source's (the
target pass leaves them alone), and with `adabn` (on by default) they are re-estimated on the
unlabelled target training split once training ends (AdaBN, Li et al., 2016), so the model
kept normalises target inputs with target statistics.

Model selection sees no target labels: early stopping watches source validation accuracy,
and `dev_risk` (`trainer.methods.selection`, deep embedded validation) estimates the target
risk of the trained network from the source validation split, to choose between methods or
their hyperparameters on one pair of domains.
Reported: `test_accuracy` on the target test split, `source_test_accuracy` (with the source's
statistics), and with AdaBN `test_accuracy_without_adabn` (the target with them too); before
training and after every epoch, the shift as the network sees it (`trainer.methods.shift`:
`feature_mmd`, `confidence`, `class_balance`, split `target`), its distance also in the card
as `feature_mmd_before` and `feature_mmd_after`.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.optim.swa_utils import update_bn

from trainer.architectures import Network
from trainer.batchnorm import batchnorms, even_batches, running_statistics_kept
from trainer.card import ModelCard
from trainer.data import Split, dataset_name, load_dataset, select
from trainer.loop import Recipe, fit
from trainer.methods.selection import dev_risk
from trainer.methods.shift import diagnose, fixed_sample
from trainer.run import RunContext, TrainResult
from trainer.spec import AdaptSpec
from trainer.training import batch_order, batches_per_epoch, classify, seed_everything
from trainer.trunk import start_trunk


@dataclass(frozen=True)
class Step:
    """What a domain loss sees of a training step."""

    source_features: torch.Tensor
    source_logits: torch.Tensor
    target_features: torch.Tensor  # normalised with the target batch's own statistics
    target_inputs: torch.Tensor  # as given, on the device
    progress: float  # the share of training done, in [0, 1]


DomainLoss = Callable[[Step], torch.Tensor]
# Given the network and the run's generator (whatever randomness the loss draws comes from it,
# so that a resumed run draws it again): the method's domain loss and its own trainable module
# (or None).
DomainLossFactory = Callable[[Network, torch.Generator], tuple[DomainLoss, nn.Module | None]]


def ramp(progress: float) -> float:
    """0 at the start, near 1 by the end: 2 / (1 + exp(-10 p)) - 1 (Ganin et al., 2016)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class BaselineParams(BaseModel):
    """What every adapt method takes, the baseline included."""

    model_config = ConfigDict(extra="forbid")

    adabn: bool = Field(
        True,
        description="Once trained, re-estimate BatchNorm's statistics on the unlabelled target "
        "training split (AdaBN), so the model normalises target inputs with the target's "
        "statistics. No effect on a network without BatchNorm.",
    )


class AdaptParams(BaselineParams):
    weight: float = Field(1.0, ge=0, le=1000, description="Weight of the domain loss.")


def _paired_batches(
    source: Split, target: Split, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """An epoch over the source, each batch with as many target examples (target cycled)."""
    source_batches = batch_order(len(source), batch_size, generator)
    target_order = torch.randperm(len(target), generator=generator)
    for i, index in enumerate(source_batches):
        start = (i * batch_size) % len(target)
        target_index = target_order.roll(-start)[: len(index)]
        yield source.x[index], source.y[index], target.x[target_index]


def adapt(
    ctx: RunContext, weight: float, make_domain_loss: DomainLossFactory | None, *, adabn: bool
) -> TrainResult:
    """Train with `loss = cross-entropy(source) + weight * domain_loss(...)`.

    The method's own module (e.g. a discriminator) trains alongside the network and is not
    saved with it.
    """
    spec: AdaptSpec = ctx.spec
    device, hp = ctx.device, spec.hyperparameters
    generator = seed_everything(hp.seed)
    source_set = load_dataset(dataset_name(spec.data.source))
    target_set = load_dataset(dataset_name(spec.data.target))
    source = select(source_set.splits["train"], spec.data.source, hp.seed)
    target = select(target_set.splits["train"], spec.data.target, hp.seed)
    target_test = (
        select(
            load_dataset(dataset_name(spec.data.target_test)).splits["test"],
            spec.data.target_test,
            hp.seed,
        )
        if spec.data.target_test
        else target_set.splits["test"]
    )
    trunk = start_trunk(ctx, source_set, source)
    head = nn.Linear(trunk.backbone.feature_dim, len(source_set.labels))
    model = Network(trunk.normalize, trunk.backbone, head).to(device)
    loss_of, extra = make_domain_loss(model, generator) if make_domain_loss else (None, None)
    trainable = nn.ModuleList([model, extra.to(device)]) if extra is not None else model
    splits = {
        "source": source,
        "target": target,
        "validation": source_set.splits["validation"],
        "source_test": source_set.splits["test"],
        "target_test": target_test,
    }
    s = {name: Split(split.y, trunk.inputs(split)) for name, split in splits.items()}
    ctx.events.log(
        f"adapting {dataset_name(spec.data.source)} ({len(source)} labelled) -> "
        f"{dataset_name(spec.data.target)} ({len(target)} unlabelled) on {device}"
    )

    shown = {domain: fixed_sample(s[domain].x) for domain in ("source", "target")}

    def shift() -> dict[str, float]:
        return diagnose(model, shown["source"], shown["target"], hp.batch_size, device)

    shift_before = shift()
    for name, value in shift_before.items():  # the starting point of the curves
        ctx.events.metric(name, "target", value, 0, 0)

    def batch_loss(batch, progress: float) -> torch.Tensor:
        xs, ys, xt = (t.to(device) for t in batch)
        if loss_of is None:  # the baseline: the target pass would change nothing
            return F.cross_entropy(model(xs), ys)
        # Separate passes: BatchNorm normalises each domain with its own statistics.
        fs = model.features(xs)
        logits = model.head(fs)
        loss = F.cross_entropy(logits, ys)
        with running_statistics_kept(model):
            ft = model.features(xt)
            step = Step(fs.float(), logits.float(), ft.float(), xt, progress)
            return loss + weight * loss_of(step)

    recipe = Recipe(
        model=trainable,
        param_groups=[{"params": list(trainable.parameters())}],
        epoch_batches=lambda g: _paired_batches(s["source"], s["target"], hp.batch_size, g),
        steps_per_epoch=batches_per_epoch(len(source), hp.batch_size),
        batch_loss=batch_loss,
        validate=lambda: classify(model, s["validation"], hp.batch_size, device),
        monitor="accuracy",
        mode="max",
        generator=generator,
        diagnose=lambda: {(name, "target"): value for name, value in shift().items()},
    )
    result = fit(ctx, recipe)
    shift_after = shift()
    validation = s["validation"]
    risk = dev_risk(
        model, shown["source"], (validation.x, validation.y), shown["target"], hp.batch_size, device
    )
    source_result = classify(model, s["source_test"], hp.batch_size, device)
    metrics = {}
    if adabn and batchnorms(model):
        without = classify(model, s["target_test"], hp.batch_size, device)
        update_bn(even_batches(s["target"].x, hp.batch_size), model, device)
        ctx.events.log(
            f"AdaBN: BatchNorm statistics re-estimated on the {len(target)} target examples "
            f"(target test accuracy {without['accuracy']:.4f} with the source's)"
        )
        metrics["test_accuracy_without_adabn"] = without["accuracy"]
    target_result = classify(model, s["target_test"], hp.batch_size, device)
    for name in ("accuracy", "macro_f1"):
        ctx.events.metric(name, "test", target_result[name], result.step, result.epochs_run)
    metrics |= {
        "train_loss": result.train_loss,
        "validation_accuracy": result.validation["accuracy"],
        "validation_macro_f1": result.validation["macro_f1"],
        "test_accuracy": target_result["accuracy"],
        "test_macro_f1": target_result["macro_f1"],
        "test_loss": target_result["loss"],
        "source_test_accuracy": source_result["accuracy"],
        "best_epoch": result.best_epoch,
        "feature_mmd_before": shift_before["feature_mmd"],
        "feature_mmd_after": shift_after["feature_mmd"],
        "dev_risk": risk,
    }
    labels = list(source_set.labels)
    card = ModelCard(**dict(trunk.card), task="classification", labels=labels, metrics=metrics)
    return TrainResult(model.cpu(), card)
