"""Random augmentations of images and of audio's log-mel spectrograms, drawn from a generator
so that a resumed run draws them again: what contrastive pretraining compares, what the
autoencoder restores from, and self-training's strong view. The defaults are the same for every
dataset: none encodes a particular shift between domains."""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class Augmentation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_shift: float = Field(
        0.15, ge=0, le=1, description="Translation, share of the side; audio: in time, of the clip."
    )
    max_rotation: float = Field(15.0, ge=0, le=180, description="Degrees; images only.")
    scale_range: tuple[float, float] = Field((0.8, 1.2), description="Zoom; images only.")
    noise_std: float = Field(0.1, ge=0, le=10, description="In standard units.")


class AudioAugmentation(Augmentation):
    """`Augmentation`, and what is done to audio's spectrograms alone (`augment_spectrograms`):
    for the methods that read images and audio."""

    max_level: float = Field(
        0.3,
        ge=0,
        le=10,
        description="Audio: a random change of level (a gain: in the log-mel spectrogram, an "
        "offset), in standard units.",
    )
    band_mask: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Audio: the widest band of mel bins, and of frames, hidden (SpecAugment), "
        "share of each.",
    )


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


def augment_spectrograms(
    x: torch.Tensor, params: AudioAugmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """Per clip of standardised log-mel spectrograms (N, 1, mels, frames): a shift in time (the
    edge frames repeated into the gap), a change of level, a band of mel bins and a band of
    frames hidden (set to the mean, 0; Park et al., 2019), and noise. No warp: a rotated or
    zoomed spectrogram is no sound's."""
    n, _, mels, frames = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    shift = (uniform(-params.max_shift, params.max_shift) * frames).round().long()
    source = (torch.arange(frames).view(1, -1) - shift.view(-1, 1)).clamp(0, frames - 1)
    shifted = x.gather(3, source.view(n, 1, 1, frames).expand(x.shape).to(x.device))
    level = uniform(-params.max_level, params.max_level).view(n, 1, 1, 1)

    def band(size: int) -> torch.Tensor:
        """(N, size): True over a random band of up to `band_mask` of `size` per clip."""
        width = (uniform(0, params.band_mask) * size).long()
        start = (torch.rand(n, generator=generator) * (size - width + 1)).long()
        positions = torch.arange(size).view(1, -1)
        return (positions >= start.view(-1, 1)) & (positions < (start + width).view(-1, 1))

    hidden = band(mels).view(n, 1, mels, 1) | band(frames).view(n, 1, 1, frames)
    noise = torch.randn(x.shape, generator=generator) * params.noise_std
    return (shifted + level.to(x.device)).masked_fill(hidden.to(x.device), 0) + noise.to(x.device)


def augment_inputs(
    x: torch.Tensor, params: AudioAugmentation, generator: torch.Generator | None, modality: str
) -> torch.Tensor:
    """A random view of a batch as the backbone reads it: images warped (`augment`), audio's
    spectrograms shifted and masked (`augment_spectrograms`)."""
    if modality == "audio":
        return augment_spectrograms(x, params, generator)
    return augment(x, params, generator)


COLOUR_OPS = ("identity", "autocontrast", "equalize", "brightness", "saturation", "contrast",
              "sharpness", "posterize", "solarize")  # fmt: skip


class ColourAugmentation(BaseModel):
    """RandAugment's photometric half as FixMatch uses it for its strong view (Sohn et al.,
    2020: `ops_per_image` operations drawn per image, each at a random magnitude; then a
    Cutout). The geometric half is `Augmentation`'s warp. `invert` is not among the defaults
    (RandAugment has none); it may be named."""

    model_config = ConfigDict(extra="forbid")

    ops: tuple[Literal[(*COLOUR_OPS, "invert")], ...] = COLOUR_OPS
    ops_per_image: int = Field(2, ge=0, le=4)
    cutout: float = Field(0.5, ge=0, le=1, description="Largest cut-out square, share of the side.")


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1, keepdim=True)


def _blend(x: torch.Tensor, towards: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: `towards` at factor 0, `x` at 1, extrapolated above."""
    return towards + factor * (x - towards)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Each channel's values replaced by their rank: a flat histogram."""
    flat = x.flatten(2)
    ranks = flat.argsort(2).argsort(2).float() / (flat.shape[2] - 1)
    return ranks.view_as(x)


def _photometric(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Operation `name` on images in [0, 1] at magnitudes `m` in [0, 1] (one per image);
    enhancement factors span 0.1-1.9 as in FixMatch's CTAugment."""
    factor = (0.1 + 1.8 * m).view(-1, 1, 1, 1)
    if name == "identity":
        return x
    if name == "autocontrast":
        low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return (x - low) / (high - low).clamp_min(1e-3)
    if name == "equalize":
        return _equalize(x)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), factor)
    if name == "saturation":
        return _blend(x, _grey(x).expand_as(x), factor)
    if name == "contrast":
        return _blend(x, _grey(x).mean((2, 3), keepdim=True).expand_as(x), factor)
    if name == "sharpness":
        smooth = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return _blend(x, smooth, factor)
    if name == "posterize":
        levels = 2 ** (4 + (m * 4).round()).view(-1, 1, 1, 1)  # 4-8 bits
        return (x * (levels - 1)).round() / (levels - 1)
    if name == "solarize":
        return torch.where(x >= m.view(-1, 1, 1, 1), 1 - x, x)
    if name == "invert":
        return 1 - x
    raise ValueError(name)


def colour_augment(
    x: torch.Tensor, params: ColourAugmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """`params.ops_per_image` operations per image, each drawn from `params.ops` with a random
    magnitude, then a random square cut out; on raw images, brought to [0, 1] by the batch's
    range and returned on their own scale."""
    n = len(x)
    low, high = x.min(), x.max()
    out = ((x - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    for _ in range(params.ops_per_image):
        chosen = torch.randint(len(params.ops), (n,), generator=generator)
        magnitude = torch.rand(n, generator=generator).to(x.device)
        mixed = out.clone()
        for index, name in enumerate(params.ops):
            rows = (chosen == index).to(x.device)
            if rows.any():
                mixed[rows] = _photometric(name, out[rows], magnitude[rows]).clamp(0, 1)
        out = mixed
    side = (torch.rand(n, generator=generator) * params.cutout * x.shape[-1]).long()
    top, left = (torch.rand(2, n, generator=generator) * x.shape[-1]).long()
    rows = torch.arange(x.shape[-2]).view(1, -1, 1)
    cols = torch.arange(x.shape[-1]).view(1, 1, -1)
    half = (side // 2).view(-1, 1, 1)
    hole = ((rows - top.view(-1, 1, 1)).abs() <= half) & (
        (cols - left.view(-1, 1, 1)).abs() <= half
    )
    hole &= side.view(-1, 1, 1) > 0
    out = out.masked_fill(hole.unsqueeze(1).to(x.device), 0.5)
    return low + out * (high - low)
