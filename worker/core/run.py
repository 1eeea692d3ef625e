"""What a training method receives and what it gives back."""

from dataclasses import dataclass, field
from typing import Any

import torch

from worker.core.architectures import Classifier
from worker.core.events import EventSink
from worker.core.spec import AdaptSpec, FinetuneSpec, PretrainSpec


@dataclass(frozen=True)
class LoadedModel:
    """A model a job starts from, with the card it was saved with."""

    classifier: Classifier
    card: dict[str, Any]


@dataclass(frozen=True)
class RunContext:
    spec: PretrainSpec | FinetuneSpec | AdaptSpec
    device: torch.device
    events: EventSink
    base: LoadedModel | None = None


@dataclass(frozen=True)
class TrainResult:
    model: Classifier
    architecture: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
