"""SimCLR-style contrastive pretraining for images and audio (Chen et al., 2020): two random
augmentations of each image (or clip's log-mel spectrogram: `trainer.augment`) should have close
projections, and other examples far ones (NT-Xent loss). Labels are not used; the projection
head is discarded by fine-tuning.

The projection head reads the features standardised (a BatchNorm without affine, as SimCLR's
head normalises its hidden layer): the loss is blind to their scale, so they leave pretraining
near a fresh network's scale instead of ten times it, which a fine-tune's first steps pay for
(docs/RESULTS.md, bench.pretraining)."""

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainer.augment import AudioAugmentation, augment_inputs
from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.trunk import Trunk


class Params(AudioAugmentation):
    temperature: float = Field(0.2, gt=0, le=10)
    projection_dim: int = Field(64, ge=1, le=4096)


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
        return nn.Sequential(
            nn.BatchNorm1d(dim, affine=False),  # blind to the features' scale
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Linear(dim, params.projection_dim),
        )

    def loss(trunk: Trunk, head: nn.Module, x: torch.Tensor, randomness) -> torch.Tensor:
        clean, modality = trunk.normalize(x), trunk.card.modality
        z1, z2 = (
            head(trunk.backbone(augment_inputs(clean, params, randomness, modality)))
            for _ in range(2)
        )
        return nt_xent(z1.float(), z2.float(), params.temperature)

    return pretrain(ctx, Pretext("contrastive", projection, lambda _trunk, split: split.x, loss))
