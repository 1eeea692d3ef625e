"""A small residual network for 28x28 and 32x32 images: a conv stem, stages of basic blocks
(each stage after the first halves the resolution), global average pooling."""

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class ResNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    widths: list[int] = Field(default=[16, 32, 64], min_length=1, max_length=6)
    blocks_per_stage: int = Field(1, ge=1, le=8)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    def __init__(self, params: ResNetParams, input_shape: Sequence[int]) -> None:
        super().__init__()
        width = params.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, in_channels = [], width
        for i, out_channels in enumerate(params.widths):
            layers = [
                BasicBlock(
                    in_channels if j == 0 else out_channels, out_channels, 2 if i and not j else 1
                )
                for j in range(params.blocks_per_stage)
            ]
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = in_channels

    def blocks(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


def build_backbone(
    params: ResNetParams, input_shape: Sequence[int], _vocab: int | None
) -> nn.Module:
    return ResNetBackbone(params, input_shape)
