"""Image CNN: conv blocks with max-pooling, then a dense feature layer (the seed's model)."""

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class CNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field(default=[32, 64, 64], min_length=1, max_length=8)
    hidden: int = Field(64, ge=1, le=8192)
    kernel_size: int = Field(3, ge=1, le=11)


class CNNBackbone(nn.Module):
    """Conv-ReLU blocks with a 2x2 max-pool between them (none after the last), then Dense-ReLU."""

    def __init__(self, params: CNNParams, input_shape: Sequence[int]) -> None:
        super().__init__()
        in_channels, layers = input_shape[0], []
        for i, out_channels in enumerate(params.channels):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(in_channels, out_channels, params.kernel_size), nn.ReLU()]
            in_channels = out_channels
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, *input_shape)).shape[1]
        self.dense = nn.Sequential(nn.Linear(flat, params.hidden), nn.ReLU())
        self.feature_dim = params.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv(x))


def build_backbone(params: CNNParams, input_shape: Sequence[int]) -> CNNBackbone:
    return CNNBackbone(params, input_shape)
