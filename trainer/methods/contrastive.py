"""SimCLR-style contrastive pretraining for images (Chen et al., 2020): two random
augmentations of each image should have close projections, and other images far ones
(NT-Xent loss). Labels are not used; the projection head is discarded by fine-tuning."""

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

    temperature: float = Field(0.2, gt=0, le=10)
    projection_dim: int = Field(64, ge=1, le=4096)
    max_shift: float = Field(0.15, ge=0, le=1, description="Translation, share of the side.")
    max_rotation: float = Field(15.0, ge=0, le=180, description="Degrees.")
    scale_range: tuple[float, float] = (0.8, 1.2)
    noise_std: float = Field(0.1, ge=0, le=10, description="In standard units.")


def augment(x: torch.Tensor, params: Params, generator: torch.Generator | None) -> torch.Tensor:
    """A random affine warp (shift, rotation, zoom), contrast jitter and noise per image."""
    n = len(x)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-params.max_rotation, params.max_rotation) * math.pi / 180
    scale = uniform(*params.scale_range)
    shift = [uniform(-params.max_shift, params.max_shift) * 2 for _ in range(2)]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1
    ).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, align_corners=False, padding_mode="border")
    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device) * params.noise_std
    return warped * contrast + noise


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each view must pick its partner among the 2N - 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z1)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partners)


def run(ctx: RunContext, params: Params) -> TrainResult:

    def projection(trunk: Trunk) -> nn.Module:
        dim = trunk.backbone.feature_dim
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, params.projection_dim))

    def loss(trunk: Trunk, head: nn.Module, x: torch.Tensor, randomness) -> torch.Tensor:
        clean = trunk.normalize(x)
        z1, z2 = (head(trunk.backbone(augment(clean, params, randomness))) for _ in range(2))
        return nt_xent(z1.float(), z2.float(), params.temperature)

    return pretrain(ctx, Pretext("contrastive", projection, lambda _trunk, split: split.x, loss))
