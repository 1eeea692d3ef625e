"""Datasets the trainer can read, resolved from the references in a job spec.

Built-in datasets come from installed packages only: nothing is downloaded at run time.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

BUILTIN_PREFIX = "builtin:"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32, (N, *input_shape), raw values as a user would send them
    y: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class LabelledDataset:
    name: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    splits: dict[str, Split]


def _digits_28() -> LabelledDataset:
    """scikit-learn's 8x8 digits (pixel values 0-16), upsampled to 28x28, with a fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)
    x = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target.astype(np.int64))
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=0.2, stratify=y, random_state=0)
    train, validation = train_test_split(rest, test_size=0.125, stratify=y[rest], random_state=0)
    splits = {
        name: Split(x[idx].contiguous(), y[idx].contiguous())
        for name, idx in (("train", train), ("validation", validation), ("test", test))
    }
    labels = tuple(str(label) for label in digits.target_names)
    return LabelledDataset("builtin:digits", (1, 28, 28), labels, splits)


BUILTIN_DATASETS: dict[str, Callable[[], LabelledDataset]] = {
    "builtin:digits": _digits_28,
}


def is_known(ref: str) -> bool:
    return ref in BUILTIN_DATASETS


@cache
def load_dataset(ref: str) -> LabelledDataset:
    try:
        loader = BUILTIN_DATASETS[ref]
    except KeyError:
        raise KeyError(f"unknown dataset {ref!r}") from None
    return loader()
