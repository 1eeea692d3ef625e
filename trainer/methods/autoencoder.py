"""Masked, denoising autoencoder pretraining for images and tables: hide part of each input
(square patches of images, single features of tables), add noise, and reconstruct the whole
standardised input from the backbone's features. Labels are not used."""

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.trunk import Trunk


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mask_ratio: float = Field(0.5, ge=0, lt=1, description="Share of patches/features hidden.")
    patch_size: int = Field(4, ge=1, le=64, description="Side of a hidden image patch.")
    noise_std: float = Field(0.1, ge=0, le=10, description="Gaussian noise, in standard units.")
    decoder_hidden: int = Field(256, ge=1, le=8192)


def corrupt(x: torch.Tensor, params: Params, generator: torch.Generator | None) -> torch.Tensor:
    """Zero a random share of patches (images) or features (tables), then add noise."""
    if x.dim() == 4:
        n, _, h, w = x.shape
        grid = (n, 1, math.ceil(h / params.patch_size), math.ceil(w / params.patch_size))
        keep = (torch.rand(grid, generator=generator) >= params.mask_ratio).float()
        keep = keep.repeat_interleave(params.patch_size, 2).repeat_interleave(params.patch_size, 3)
        keep = keep[:, :, :h, :w]
    else:
        keep = (torch.rand(x.shape, generator=generator) >= params.mask_ratio).float()
    noise = torch.randn(x.shape, generator=generator) * params.noise_std
    return x * keep.to(x.device) + noise.to(x.device)


def run(ctx: RunContext, params: Params) -> TrainResult:

    def decoder(trunk: Trunk) -> nn.Module:
        size = math.prod(trunk.card.input_shape)
        hidden = params.decoder_hidden
        return nn.Sequential(
            nn.Linear(trunk.backbone.feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, size)
        )

    def loss(trunk: Trunk, head: nn.Module, x: torch.Tensor, randomness) -> torch.Tensor:
        clean = trunk.normalize(x)
        restored = head(trunk.backbone(corrupt(clean, params, randomness)))
        return F.mse_loss(restored.float(), clean.flatten(1))

    return pretrain(ctx, Pretext("autoencoder", decoder, lambda _trunk, split: split.x, loss))
