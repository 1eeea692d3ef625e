"""Masked, denoising autoencoder pretraining for images, audio and tables: corrupt each input
and reconstruct the clean, standardised input from the backbone's features (audio: its log-mel
spectrogram). Images are warped, contrast-jittered and noised (`trainer.augment`, the
augmentations contrastive pretraining compares), audio's spectrograms shifted in time, changed
in level, band-masked and noised, then square patches are hidden; tables have single features
hidden, then noise added. Labels are not used.

Why it is built so (docs/RESULTS.md, bench.pretraining): the earlier autoencoder, which only
masked patches and added noise, gained 1.5-1.9 points over scratch with 5% of the digits
labels, and lost to scratch in short fine-tunes (35% against 70%). Measured on its backbone:
- its features ended 36 times the scale of a fresh network's (mean norm 10.8 against 0.3),
  half of them never active: the decoder read them as they were, so growing them lowered its
  loss. The decoder now reads them standardised (a BatchNorm without affine), which makes the
  loss blind to their scale: they leave pretraining near a fresh network's;
- restoring masked patches in place is a local task: a logistic regression on its frozen
  features, 5% of the labels, scored 82.5%, against 65.8% on a fresh network's. Restoring the
  clean digit from a warped one needs the digit's shape: 91.1% (contrastive: 90.3%). Masking
  or standardising alone does not do it (84.4%, 84.7%);
- fine-tuning then lost most of that (a fresh random head's first steps distort the
  features); `supervised` fits a new head to the frozen features first (`head_init`).
"""

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainer.augment import AudioAugmentation, augment_inputs
from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.trunk import Trunk


class Params(AudioAugmentation):
    """The warp (images) is `Augmentation`'s, the spectrograms' changes (audio)
    `AudioAugmentation`'s; `noise_std` is the noise for tables too."""

    mask_ratio: float = Field(0.5, ge=0, lt=1, description="Share of patches/features hidden.")
    patch_size: int = Field(4, ge=1, le=64, description="Side of a hidden image patch.")
    decoder_hidden: int = Field(256, ge=1, le=8192)


def corrupt(
    x: torch.Tensor, params: Params, generator: torch.Generator | None, modality: str = "image"
) -> torch.Tensor:
    """Images (and audio's spectrograms): augment (`augment_inputs`), then zero a random share
    of patches. Tables: zero a random share of features, then add noise."""
    if x.dim() == 4:
        warped = augment_inputs(x, params, generator, modality)
        n, _, h, w = x.shape
        grid = (n, 1, math.ceil(h / params.patch_size), math.ceil(w / params.patch_size))
        keep = (torch.rand(grid, generator=generator) >= params.mask_ratio).float()
        keep = keep.repeat_interleave(params.patch_size, 2).repeat_interleave(params.patch_size, 3)
        return warped * keep[:, :, :h, :w].to(x.device)
    keep = (torch.rand(x.shape, generator=generator) >= params.mask_ratio).float()
    noise = torch.randn(x.shape, generator=generator) * params.noise_std
    return x * keep.to(x.device) + noise.to(x.device)


def run(ctx: RunContext, params: Params) -> TrainResult:

    def decoder(trunk: Trunk) -> nn.Module:
        size, dim = math.prod(trunk.backbone_input_shape), trunk.backbone.feature_dim
        return nn.Sequential(
            nn.BatchNorm1d(dim, affine=False),  # blind to the features' scale
            nn.Linear(dim, params.decoder_hidden),
            nn.ReLU(),
            nn.Linear(params.decoder_hidden, size),
        )

    def loss(trunk: Trunk, head: nn.Module, x: torch.Tensor, randomness) -> torch.Tensor:
        clean = trunk.normalize(x)
        restored = head(trunk.backbone(corrupt(clean, params, randomness, trunk.card.modality)))
        return F.mse_loss(restored.float(), clean.flatten(1))

    return pretrain(ctx, Pretext("autoencoder", decoder, lambda _trunk, split: split.x, loss))
