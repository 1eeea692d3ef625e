"""Datasets the trainer can read, resolved from the references in a job spec.

Built-in datasets come from installed packages only: nothing is downloaded at run time. Every
built-in has a fixed stratified train/validation/test split (70/10/20, seed 0); a reference
may select a reproducible, stratified subset of its training split (`fraction`, `per_class`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from worker.core.spec import DatasetSelection


@dataclass(frozen=True)
class Split:
    y: torch.Tensor  # int64 labels, (N,)
    x: torch.Tensor | None = None  # float32 raw inputs (N, *input_shape); None for text
    texts: tuple[str, ...] | None = None  # raw documents, for text datasets

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> "Split":
        index_t = torch.as_tensor(index, dtype=torch.long)
        return Split(
            y=self.y[index_t],
            x=None if self.x is None else self.x[index_t],
            texts=None if self.texts is None else tuple(self.texts[i] for i in index),
        )


@dataclass(frozen=True)
class LabelledDataset:
    name: str
    modality: str  # "image", "tabular" or "text"
    input_shape: tuple[int, ...]  # () for text: the model's tokenizer decides the length
    labels: tuple[str, ...]
    splits: dict[str, Split]


def fixed_split(y: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified 70/10/20 train/validation/test indices, the same on every machine."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=0.2, stratify=y, random_state=0)
    train, validation = train_test_split(rest, test_size=0.125, stratify=y[rest], random_state=0)
    return {"train": train, "validation": validation, "test": test}


def _tensor_dataset(
    name: str, modality: str, x: np.ndarray, y: np.ndarray, labels: tuple[str, ...]
) -> LabelledDataset:
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(y.astype(np.int64))
    full = Split(y=y_t, x=x_t)
    splits = {name_: full.take(idx) for name_, idx in fixed_split(y).items()}
    return LabelledDataset(name, modality, tuple(x_t.shape[1:]), labels, splits)


@cache
def _digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (pixel values 0-16), upsampled bilinearly to 28x28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)
    x = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return x.numpy(), digits.target


DIGIT_LABELS = tuple(str(d) for d in range(10))


def _digits() -> LabelledDataset:
    x, y = _digits_images()
    return _tensor_dataset("builtin:digits", "image", x, y, DIGIT_LABELS)


def _digits_rgb() -> LabelledDataset:
    """The digits as 3-channel grey images: the source domain for `builtin:digits-m`."""
    x, y = _digits_images()
    return _tensor_dataset("builtin:digits-rgb", "image", x.repeat(3, axis=1), y, DIGIT_LABELS)


def _digits_m() -> LabelledDataset:
    """A shifted domain made as MNIST-M was made from MNIST: each digit is blended onto a
    random 28x28 colour patch of a photograph (scikit-learn's sample images), taking
    |patch - digit| per channel. Deterministic (seed 0); values on the digits' 0-16 scale."""
    from sklearn.datasets import load_sample_images

    x, y = _digits_images()
    photos = [image.astype(np.float32) / 255.0 for image in load_sample_images().images]
    rng = np.random.default_rng(0)
    digits = x / 16.0  # (N, 1, 28, 28) in [0, 1]
    out = np.empty((len(x), 3, 28, 28), dtype=np.float32)
    for i in range(len(x)):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - 28)
        left = rng.integers(photo.shape[1] - 28)
        patch = photo[top : top + 28, left : left + 28].transpose(2, 0, 1)
        out[i] = np.abs(patch - digits[i]) * 16.0
    return _tensor_dataset("builtin:digits-m", "image", out, y, DIGIT_LABELS)


def _breast_cancer() -> LabelledDataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 rows, 30 numeric features."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    labels = tuple(str(name) for name in table.target_names)
    return _tensor_dataset("builtin:breast-cancer", "tabular", table.data, table.target, labels)


def _bbc_news() -> LabelledDataset:
    """BBC News articles and their topics (`worker.core.text_corpora`). Language-model
    pretraining reads the texts of its training split only, so fine-tuning's test split stays
    unseen."""
    from worker.core.text_corpora import load_bbc_news

    texts, labels, names = load_bbc_news()
    y = np.asarray(labels)
    full = Split(y=torch.from_numpy(y.astype(np.int64)), texts=tuple(texts))
    splits = {name: full.take(idx) for name, idx in fixed_split(y).items()}
    return LabelledDataset("builtin:bbc-news", "text", (), names, splits)


BUILTIN_DATASETS: dict[str, Callable[[], LabelledDataset]] = {
    "builtin:digits": _digits,
    "builtin:digits-rgb": _digits_rgb,
    "builtin:digits-m": _digits_m,
    "builtin:breast-cancer": _breast_cancer,
    "builtin:bbc-news": _bbc_news,
}


def dataset_name(ref: str | DatasetSelection) -> str:
    return ref if isinstance(ref, str) else ref.dataset


def is_known(ref: str | DatasetSelection) -> bool:
    return dataset_name(ref) in BUILTIN_DATASETS


@cache
def load_dataset(name: str) -> LabelledDataset:
    try:
        loader = BUILTIN_DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}") from None
    return loader()


def select(split: Split, ref: str | DatasetSelection, seed: int) -> Split:
    """The part of `split` that `ref` selects: all of it, or a stratified subset by seed."""
    if isinstance(ref, str) or (ref.fraction is None and ref.per_class is None):
        return split
    rng = np.random.default_rng(seed)
    y = split.y.numpy()
    chosen = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        count = ref.per_class or max(1, round(ref.fraction * len(members)))
        chosen.append(members[:count])
    return split.take(np.sort(np.concatenate(chosen)))


def splits_for(
    train_ref: str | DatasetSelection,
    validation_ref: str | DatasetSelection | None,
    test_ref: str | DatasetSelection | None,
    seed: int,
) -> tuple[LabelledDataset, Split, Split, Split]:
    """The training dataset and its train (selected), validation and test splits; validation
    and test default to those splits of the training dataset."""
    dataset = load_dataset(dataset_name(train_ref))
    train = select(dataset.splits["train"], train_ref, seed)

    def other(ref, name: str) -> Split:
        return load_dataset(dataset_name(ref)).splits[name] if ref else dataset.splits[name]

    return dataset, train, other(validation_ref, "validation"), other(test_ref, "test")
