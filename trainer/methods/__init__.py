"""The registry of training methods. Adding one is a new module plus one line here.

A method declares its own constraints in its line, and `trainer.validation` asks for them:
`single_process` (why it cannot train on several processes), `labelled` (data that must carry
labels), `needs_left_to_right` (of the architecture), `check` (its params' extra checks),
`validation_metrics` (what it reports after every epoch, which a sweep may optimise), `tasks`
(the dataset tasks it trains into),
`base_tasks` (what a base model must have been trained for) and `source_free` (an adapt method
that reads no source data, only a base model and the target).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from trainer.chat_format import ChatTokenizer
from trainer.constraints import Check, lora_issues
from trainer.heads import HEADS
from trainer.methods import (
    autoencoder,
    causal_lm,
    contrastive,
    coral,
    dann,
    dpo,
    mcc,
    mmd,
    self_training,
    sft,
    shot,
    simcse,
    source_only,
    supervised,
)
from trainer.run import RunContext, TrainResult

ANY, SERIES, IMAGES, IMAGES_AUDIO, IMAGES_AUDIO_TABLES, TEXT, CHAT, PREFERENCES = (
    frozenset({"image", "tabular", "text", "audio"}),
    frozenset({"series"}),
    frozenset({"image"}),
    frozenset({"image", "audio"}),
    frozenset({"image", "audio", "tabular"}),
    frozenset({"text"}),
    frozenset({"chat"}),
    frozenset({"preference"}),
)
ADAPT_LABELS = ("source", "target_test")  # the target's training split is unlabelled
# Every task head's: a supervised sweep's objective may be any of them (its dataset's head
# reports its own).
SUPERVISED_METRICS = tuple(
    dict.fromkeys(name for head in HEADS.values() for name in head.validation_metrics)
)
PRETEXT_LOSS = ("loss",)  # a pretext task's validation loss, its only figure per epoch


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # the job kind it serves
    params: type[BaseModel]
    train: Callable[[RunContext, Any], TrainResult]  # the module's `run(ctx, params)`
    modalities: frozenset[str]  # the data it reads
    labelled: tuple[str, ...] = ()  # the data fields whose datasets must carry labels
    # Why `resources.processes` must stay 1 for it (see trainer.validation); None: it need not.
    single_process: str | None = None
    needs_left_to_right: bool = False  # of the architecture: see `Architecture`
    # Adapts a trained classifier (`base_model_id`) to the target without reading `data.source`.
    source_free: bool = False
    check: Check | None = None  # its params' extra checks, that need the architecture
    # The tasks a base model (`base_model_id`) may have been trained for; None: any.
    base_tasks: tuple[str, ...] | None = None
    # What it reports on the validation split after every epoch (a sweep's objective).
    validation_metrics: tuple[str, ...] = ("loss", "accuracy", "macro_f1")
    # The dataset tasks (`trainer.heads`) whose labels it trains on; None: it reads no labels,
    # or labels of no task head (chat).
    tasks: frozenset[str] | None = frozenset({"classification"})
    # Chat methods: the tokens of an example's longest sequence as it trains on it, so that
    # examples over the model's `max_length` are refused at submission (see trainer.validation).
    example_tokens: Callable[[ChatTokenizer, Any], int] | None = None
    # Trains from streamed datasets (`trainer.streaming`), too large to read whole.
    streams: bool = False

    def run(self, ctx: RunContext) -> TrainResult:
        """Train as the job's spec says, its method params parsed once, here."""
        return self.train(ctx, self.params.model_validate(ctx.spec.method.params))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "autoencoder",
            "pretrain",
            autoencoder.Params,
            autoencoder.run,
            IMAGES_AUDIO_TABLES,
            single_process="its masks and noise come from the data-order generator, drawn per "
            "share, so the ranks' generators and batch orders would drift apart",
            validation_metrics=PRETEXT_LOSS,
            tasks=None,
        ),
        Method(
            "contrastive",
            "pretrain",
            contrastive.Params,
            contrastive.run,
            IMAGES_AUDIO,
            single_process="each example's negatives are the rest of its batch (NT-Xent), of "
            "which a share holds only part; its augmentations come from the data-order generator",
            validation_metrics=PRETEXT_LOSS,
            tasks=None,
        ),
        Method(
            "causal_lm",
            "pretrain",
            causal_lm.Params,
            causal_lm.run,
            TEXT,
            needs_left_to_right=True,
            validation_metrics=PRETEXT_LOSS,
            tasks=None,
            streams=True,
        ),
        Method(
            "simcse",
            "pretrain",
            simcse.Params,
            simcse.run,
            TEXT,
            single_process="each text's negatives are the rest of its batch (NT-Xent), of which "
            "a share holds only part",
            validation_metrics=PRETEXT_LOSS,
            tasks=None,
        ),
        Method(
            "supervised",
            "finetune",
            supervised.Params,
            supervised.run,
            ANY | SERIES,  # the only method that trains forecasters
            labelled=("train", "validation", "test"),
            check=lora_issues,
            tasks=frozenset(HEADS),
            validation_metrics=SUPERVISED_METRICS,
            streams=True,  # text classification, multilabel: the tasks a stream can hold
        ),
        Method(
            "sft",
            "finetune",
            sft.Params,
            sft.run,
            CHAT,
            single_process="its loss is a mean over the batch's trained tokens, which the "
            "shares of a batch hold in different numbers",
            needs_left_to_right=True,
            base_tasks=("causal_lm",),
            check=lora_issues,
            validation_metrics=("loss", "token_accuracy", "perplexity"),
            example_tokens=sft.example_tokens,
            tasks=None,
        ),
        Method(
            "dpo",
            "finetune",
            dpo.Params,
            dpo.run,
            PREFERENCES,
            single_process="a batch holds each pair's two answers, which a share of it would part",
            needs_left_to_right=True,
            base_tasks=("causal_lm",),
            check=lora_issues,
            validation_metrics=("loss", "reward_accuracy", "margin"),
            example_tokens=dpo.example_tokens,
            tasks=None,
        ),
        Method("source_only", "adapt", source_only.Params, source_only.run, ANY, ADAPT_LABELS),
        Method("dann", "adapt", dann.Params, dann.run, ANY, ADAPT_LABELS),
        Method(
            "coral",
            "adapt",
            coral.Params,
            coral.run,
            ANY,
            ADAPT_LABELS,
            single_process="CORAL compares the feature covariances of the whole batch",
        ),
        Method(
            "mmd",
            "adapt",
            mmd.Params,
            mmd.run,
            ANY,
            ADAPT_LABELS,
            single_process="MMD compares every pair of the whole batch's features",
        ),
        Method(
            "mcc",
            "adapt",
            mcc.Params,
            mcc.run,
            ANY,
            ADAPT_LABELS,
            single_process="its class correlations are over the whole batch's predictions",
        ),
        Method(
            "self_training",
            "adapt",
            self_training.Params,
            self_training.run,
            IMAGES,
            ADAPT_LABELS,
            single_process="its augmentations come from the data-order generator, drawn per "
            "share, so the ranks' generators and batch orders would drift apart",
        ),
        Method(
            "shot",
            "adapt",
            shot.Params,
            shot.run,
            ANY,
            ("target_test",),
            single_process="its diversity term is the entropy of the whole batch's mean prediction",
            validation_metrics=("loss",),
            source_free=True,
        ),
    )
}


def methods_for(kind: str) -> list[str]:
    return sorted(name for name, method in METHODS.items() if method.kind == kind)
