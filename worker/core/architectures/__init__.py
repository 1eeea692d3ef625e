"""The registry of model architectures. Adding one is a new module plus one line here."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from pydantic import BaseModel
from torch import nn

from worker.core.architectures import cnn


class BackboneBuilder(Protocol):
    def __call__(self, params: BaseModel, input_shape: Sequence[int]) -> nn.Module: ...


@dataclass(frozen=True)
class Architecture:
    name: str
    params: type[BaseModel]
    build_backbone: BackboneBuilder
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (Architecture("cnn", cnn.CNNParams, cnn.build_backbone, cnn.__doc__ or ""),)
}


class Normalize(nn.Module):
    """Per-channel standardisation, kept inside the model so it receives raw inputs."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_rank: int) -> None:
        super().__init__()
        shape = (1, len(mean)) + (1,) * (input_rank - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Normalisation, then a backbone that makes features, then a linear task head."""

    def __init__(self, normalize: Normalize, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(
    architecture: str,
    params: dict,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Classifier:
    arch = ARCHITECTURES[architecture]
    backbone = arch.build_backbone(arch.params.model_validate(params), input_shape)
    return Classifier(Normalize(mean, std, len(input_shape)), backbone, num_classes)
