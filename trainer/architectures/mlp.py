"""A multi-layer perceptron for tables (and flattened images): Linear-ReLU-Dropout layers."""

import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default=[128, 64], min_length=1, max_length=8)
    dropout: float = Field(0.1, ge=0, lt=1)


class MLPBackbone(nn.Module):
    def __init__(self, params: MLPParams, input_shape: Sequence[int]) -> None:
        super().__init__()
        in_features, layers = math.prod(input_shape), []
        for width in params.hidden:
            layers.append(
                nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(params.dropout))
            )
            in_features = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_features

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


def build_backbone(params: MLPParams, input_shape: Sequence[int], _vocab: int | None) -> nn.Module:
    return MLPBackbone(params, input_shape)
