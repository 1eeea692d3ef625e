"""How hard is the shift to `builtin:digits-m`? Prints, for its test split, the share of
images whose strokes are darker than their background (contrast inverted against the grey
source digits) and of images with almost no contrast.

    .venv/bin/python -m bench.digits_m
"""

import torch

from trainer.data import load_dataset


def stroke_contrast() -> torch.Tensor:
    """Per test image: mean stroke minus mean background level, averaged over channels, with
    strokes and background located on the grey source image of the same digit."""
    grey = load_dataset("builtin:digits-rgb").splits["test"].x / 16
    shifted = load_dataset("builtin:digits-m").splits["test"].x / 16
    background, stroke = (grey < 0.05).float(), (grey > 0.6).float()

    def level(mask: torch.Tensor) -> torch.Tensor:
        return (shifted * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1)

    return (level(stroke) - level(background)).mean(1)


def main() -> None:
    contrast = stroke_contrast()
    print(f"digits-m test images: {len(contrast)}")
    print(f"inverted (strokes darker than background): {(contrast < 0).float().mean():.1%}")
    print(
        f"almost no contrast (|difference| < 0.15):   {(contrast.abs() < 0.15).float().mean():.1%}"
    )


if __name__ == "__main__":
    main()
