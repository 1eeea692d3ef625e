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
    batch_norm: bool = Field(
        False,
        description="BatchNorm after each convolution and the dense layer. Domain adaptation "
        "needs it: each domain's batches are normalised with their own statistics.",
    )


class CNNBackbone(nn.Module):
    """Conv-ReLU blocks with a 2x2 max-pool between them (none after the last), then Dense-ReLU;
    with `batch_norm`, Conv-BN-ReLU and Dense-BN-ReLU."""

    def __init__(self, params: CNNParams, input_shape: Sequence[int]) -> None:
        super().__init__()
        in_channels, convs = input_shape[0], []
        for i, out_channels in enumerate(params.channels):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            conv = nn.Conv2d(in_channels, out_channels, params.kernel_size)
            norm = [nn.BatchNorm2d(out_channels)] if params.batch_norm else []
            convs.append(nn.Sequential(*pool, conv, *norm, nn.ReLU()))
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():  # in eval mode: a probe must not move BatchNorm's statistics
            flat = self.convs.eval()(torch.zeros(1, *input_shape)).flatten(1).shape[1]
        self.convs.train()
        norm = [nn.BatchNorm1d(params.hidden)] if params.batch_norm else []
        dense = nn.Linear(flat, params.hidden)
        self.dense = nn.Sequential(nn.Flatten(), dense, *norm, nn.ReLU())
        self.feature_dim = params.hidden

    def blocks(self) -> list[nn.Module]:
        return [*self.convs, self.dense]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.convs(x))


def build_backbone(params: CNNParams, input_shape: Sequence[int], _vocab: int | None) -> nn.Module:
    return CNNBackbone(params, input_shape)
