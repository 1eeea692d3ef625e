"""Random augmentations of images, drawn from a generator so that a resumed run draws them
again: what contrastive pretraining compares and self-training's strong view. The defaults are
the same for every dataset: none encodes a particular shift between domains."""

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class Augmentation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_shift: float = Field(0.15, ge=0, le=1, description="Translation, share of the side.")
    max_rotation: float = Field(15.0, ge=0, le=180, description="Degrees.")
    scale_range: tuple[float, float] = (0.8, 1.2)
    noise_std: float = Field(0.1, ge=0, le=10, description="In standard units.")


def augment(
    x: torch.Tensor, params: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """A random affine warp (shift, rotation, zoom), contrast jitter and noise per image, of
    images already normalised."""
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
