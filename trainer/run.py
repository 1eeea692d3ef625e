"""What a training method receives and what it gives back."""

from dataclasses import dataclass

import torch
from torch import nn

from trainer.card import ModelCard
from trainer.checkpoint import Checkpointing
from trainer.events import EventSink
from trainer.spec import AdaptSpec, FinetuneSpec, PretrainSpec


@dataclass(frozen=True)
class LoadedModel:
    """A model a job starts from: its weights by name and the card it was saved with."""

    state: dict[str, torch.Tensor]
    card: ModelCard


@dataclass(frozen=True)
class RunContext:
    spec: PretrainSpec | FinetuneSpec | AdaptSpec
    device: torch.device
    events: EventSink
    base: LoadedModel | None = None
    checkpointing: Checkpointing | None = None


@dataclass(frozen=True)
class TrainResult:
    """The trained network (normalize, backbone, head) and its card: its trunk, task, labels
    (classifiers), adapter, metrics; the trainer adds where it comes from."""

    model: nn.Module
    card: ModelCard
