"""Datasets the trainer can read, resolved from the references in a job spec.

Built-in datasets (`builtin:...`) come from installed packages only: nothing is downloaded at
run time. Uploaded datasets (`ds_...`) are files the trainer is handed (`register_file`).
Every dataset has a fixed train/validation/test split (70/10/20, stratified, seed 0) unless
its file assigns one; a time series is split in time and cut into windows (`trainer.series`),
whose length a job may choose. A reference may select a reproducible, stratified subset of its
training split (`fraction`, `per_class`).
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainer import series_builtins
from trainer.card import TableColumn
from trainer.readers import SPLIT_NAMES, DatasetError, ReadLimits, read_dataset, read_series
from trainer.readers.chat import Example
from trainer.readers.common import IGNORED_TAG, encode_tag_sequences
from trainer.series import SeriesTable, windows
from trainer.spec import AdaptData, DatasetSelection, TrainData
from trainer.spoken_digits import FEMALE_VOICES, MALE_VOICES, spoken_digits, telephone

UNLABELLED = -1  # the label of every example of an unlabelled dataset
IGNORED = IGNORED_TAG  # a token tag's place past an example's words


@dataclass(frozen=True)
class Split:
    # int64 labels (N,); regression: float32 targets (N, T); multilabel: float32 (N, labels),
    # 1 where the example has the label; forecasting: the series' next values (N, horizon, S)
    y: torch.Tensor
    # float32 raw inputs (N, *input_shape), forecasting's contexts (N, context_length,
    # columns); None for the others
    x: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None  # raw documents, for text datasets
    examples: tuple[Example, ...] | None = None  # for chat and preference datasets
    # token tagging: each example's words; `y` is then int64 (N, words), a tag index per word,
    # IGNORED past an example's last word
    words: tuple[tuple[str, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> "Split":
        index_t = torch.as_tensor(index, dtype=torch.long)
        return Split(
            y=self.y[index_t],
            x=None if self.x is None else self.x[index_t],
            texts=None if self.texts is None else tuple(self.texts[i] for i in index),
            examples=None if self.examples is None else tuple(self.examples[i] for i in index),
            words=None if self.words is None else tuple(self.words[i] for i in index),
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What checking a job spec needs to know of a dataset, without loading it."""

    name: str
    modality: str  # "image", "tabular", "text", "audio", "chat", "preference" or "series"
    # () for text, chat, preference: the tokenizer decides lengths; audio: (samples,) of a clip
    # at trainer.waveforms.SAMPLE_RATE; series: (context_length, columns) of its windows
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]  # () when unlabelled
    task: str = "classification"  # what its labels are for: see trainer.heads
    targets: tuple[str, ...] = ()  # regression: the numeric targets' names; forecasting: series'
    horizon: int = 0  # forecasting: the rows its windows forecast
    part_sizes: tuple[int, ...] = ()  # forecasting: the rows of its train, validation, test parts
    streamed: bool = False  # too large to read whole: read as a stream (`trainer.streaming`)

    @property
    def labelled(self) -> bool:
        return bool(self.labels or self.targets)

    def windowed(self, context_length: int | None, horizon: int | None) -> "DatasetInfo":
        """A series' windows as a job asks for them; other data unchanged."""
        if self.task != "forecasting":
            return self
        shape = (context_length or self.input_shape[0], self.input_shape[1])
        return replace(self, input_shape=shape, horizon=horizon or self.horizon)


@dataclass(frozen=True)
class LabelledDataset:
    name: str
    modality: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    splits: dict[str, Split]
    feature_names: tuple[str, ...] | None = None  # tables: encoded feature names
    task: str = "classification"
    targets: tuple[str, ...] = ()  # regression, forecasting
    columns: tuple[TableColumn, ...] | None = None  # tables: the columns those come from
    series: SeriesTable | None = None  # forecasting: the table its windows are cut from
    horizon: int = 0  # forecasting

    def info(self) -> DatasetInfo:
        sizes = () if self.series is None else tuple(map(len, self.series.part_rows().values()))
        return DatasetInfo(
            self.name, self.modality, self.input_shape, self.labels, self.task, self.targets,
            self.horizon, sizes,
        )  # fmt: skip


def _hold_out(index: np.ndarray, y: np.ndarray | None, share: float):
    """Split `index` in two, `share` of it held out; stratified by label where every class can
    give to both parts."""
    from sklearn.model_selection import train_test_split

    labels = None if y is None else y[index]
    if len(index) < 2:  # nothing would be left to train on
        message = "too few examples to hold out validation and test examples and train on the rest"
        raise DatasetError("file", message)
    try:
        return train_test_split(index, test_size=share, stratify=labels, random_state=0)
    except ValueError:  # a class too small to stratify
        return train_test_split(index, test_size=share, random_state=0)


def fixed_split(y: np.ndarray | None, count: int | None = None) -> dict[str, np.ndarray]:
    """Stratified 70/10/20 train/validation/test indices, the same on every machine."""
    rest, test = _hold_out(np.arange(len(y) if y is not None else count), y, 0.2)
    train, validation = _hold_out(rest, y, 0.125)
    return {"train": train, "validation": validation, "test": test}


def assigned_split(y: np.ndarray | None, given: np.ndarray) -> dict[str, np.ndarray]:
    """The split a file assigns; validation and test it leaves empty are taken from train."""
    parts = {name: np.flatnonzero(given == name) for name in SPLIT_NAMES}
    if len(parts["train"]) == 0:
        raise DatasetError("split", "no example is assigned to `train`")
    for name, share in (("test", 0.2), ("validation", 0.125)):
        if len(parts[name]) == 0:
            parts["train"], parts[name] = _hold_out(parts["train"], y, share)
    return parts


def _tensor_dataset(
    name: str,
    modality: str,
    x: np.ndarray,
    y: np.ndarray,
    labels: tuple[str, ...],
    feature_names: tuple[str, ...] | None = None,
) -> LabelledDataset:
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(y.astype(np.int64))
    full = Split(y=y_t, x=x_t)
    splits = {name_: full.take(idx) for name_, idx in fixed_split(y).items()}
    return LabelledDataset(
        name, modality, tuple(x_t.shape[1:]), labels, splits, feature_names,
        columns=_numeric_columns(feature_names),
    )  # fmt: skip


def _numeric_columns(names: tuple[str, ...] | None) -> tuple[TableColumn, ...] | None:
    """A built-in table's columns: numbers, one feature each."""
    return None if names is None else tuple(TableColumn(name=name) for name in names)


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


def _digit_pairs() -> LabelledDataset:
    """Multi-label images made from the digits by a fixed rule: each image is two digits side
    by side (28 x 56), its labels the digits it shows: one or two labels (the same digit twice
    is one). The left digit is each image of a split of `builtin:digits` once, the right one
    drawn at random from the same split, blank for a quarter of them, so that no digit image
    appears in two splits."""
    x, y = _digits_images()
    rng = np.random.default_rng(0)
    blank = np.zeros_like(x[0])
    splits = {}
    for name, index in fixed_split(y).items():
        partners = rng.choice(index, size=len(index))
        alone = rng.random(len(index)) < 0.25
        right = np.where(alone[:, None, None, None], blank, x[partners])
        images = np.concatenate([x[index], right], axis=3)
        multi_hot = np.zeros((len(index), 10), dtype=np.float32)
        multi_hot[np.arange(len(index)), y[index]] = 1.0
        multi_hot[np.flatnonzero(~alone), y[partners][~alone]] = 1.0
        splits[name] = Split(y=torch.from_numpy(multi_hot), x=torch.from_numpy(images))
    return LabelledDataset(
        "builtin:digit-pairs", "image", (1, 28, 56), DIGIT_LABELS, splits, task="multilabel"
    )


@cache
def _photographs() -> tuple[np.ndarray, ...]:
    """The photographs that digits-m's backgrounds come from, colour (H, W, 3) in [0, 1]:
    scikit-image's bundled natural images (greyscale ones as grey colour) and scikit-learn's
    two sample images, 21 scenes from portraits to micrographs and galaxies."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    def colour(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32) / 255.0
        return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]

    loaders = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
               "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms",
               "moon", "page", "retina", "rocket", "text")  # fmt: skip
    photos = [colour(getattr(skimage.data, name)()) for name in loaders]
    photos.append(colour(skimage.data.stereo_motorcycle()[0]))
    photos += [colour(image) for image in load_sample_images().images]
    return tuple(photos)


def _digits_m() -> LabelledDataset:
    """A shifted domain made as MNIST-M was made from MNIST: each digit is blended onto a
    random 28x28 colour patch of one of 21 photographs (`_photographs`), taking
    |patch - digit| per channel. Deterministic (seed 0); values on the digits' 0-16 scale."""
    x, y = _digits_images()
    photos = _photographs()
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


def _digits_scan() -> LabelledDataset:
    """A shifted domain of another nature than digits-m's colour and texture: the digits as a
    poor scan shows them, grey like the source but smaller and off-centre (scale 0.6-0.9,
    up to 4 pixels from the centre), with thicker strokes (a 3x3 dilation), blurred (Gaussian,
    sigma 1), at a random contrast (0.45-0.9) over a random background level (0-0.3), with sensor
    noise (sd 0.05).
    Deterministic (seed 0); values on the digits' 0-16 scale."""
    x, y = _digits_images()
    generator = torch.Generator().manual_seed(0)
    n = len(x)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    digits = torch.from_numpy(x) / 16.0
    scale, shift = uniform(0.6, 0.9), uniform(-4 / 14, 4 / 14, 2)
    zeros = torch.zeros(n)
    theta = torch.stack(
        [torch.stack([1 / scale, zeros, shift[:, 0]], 1),
         torch.stack([zeros, 1 / scale, shift[:, 1]], 1)], 1
    )  # fmt: skip
    grid = F.affine_grid(theta, [n, 1, 28, 28], align_corners=False)
    small = F.grid_sample(digits, grid, align_corners=False, padding_mode="zeros")
    thick = F.max_pool2d(small, 3, stride=1, padding=1)
    kernel = torch.exp(-(torch.arange(-3, 4.0) ** 2) / 2)
    kernel = torch.outer(kernel, kernel) / kernel.sum() ** 2
    blurred = F.conv2d(thick, kernel.view(1, 1, 7, 7), padding=3)
    background, contrast = uniform(0.0, 0.3, 1, 1, 1), uniform(0.45, 0.9, 1, 1, 1)
    noise = torch.randn(blurred.shape, generator=generator) * 0.05
    scan = (background + contrast * blurred + noise).clamp(0, 1) * 16.0
    out = scan.repeat(1, 3, 1, 1).numpy()
    return _tensor_dataset("builtin:digits-scan", "image", out, y, DIGIT_LABELS)


def _spoken_digits(
    name: str, voices: tuple[str, ...], channel: Callable[[np.ndarray], np.ndarray] | None = None
) -> LabelledDataset:
    """The clips of `voices` from `trainer.spoken_digits` (synthesised on first use), through
    `channel` if one is given, split 70/10/20 by digit."""
    clips = spoken_digits()
    chosen = np.isin(clips["voice"], voices)
    x = clips["x"][chosen] if channel is None else channel(clips["x"][chosen])
    return _tensor_dataset(name, "audio", x, clips["digit"][chosen], DIGIT_LABELS)


def _breast_cancer() -> LabelledDataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 rows, 30 numeric features."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    labels = tuple(str(name) for name in table.target_names)
    names = tuple(str(name) for name in table.feature_names)
    return _tensor_dataset(
        "builtin:breast-cancer", "tabular", table.data, table.target, labels, names
    )


def _regression_table(
    name: str, x: np.ndarray, y: np.ndarray, targets: tuple[str, ...], features: tuple[str, ...]
):
    """A table with numeric targets (N, T), split 70/10/20 at random (seed 0)."""
    full = Split(
        y=torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(len(x), len(targets))),
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
    )
    splits = {part: full.take(index) for part, index in fixed_split(None, len(x)).items()}
    return LabelledDataset(
        name, "tabular", (x.shape[1],), (), splits, features, task="regression",
        targets=targets, columns=_numeric_columns(features),
    )  # fmt: skip


def _diabetes() -> LabelledDataset:
    """scikit-learn's diabetes table: 442 patients, 10 measurements (unscaled), and the
    disease's progression a year later."""
    from sklearn.datasets import load_diabetes

    table = load_diabetes(scaled=False)
    features = tuple(str(name) for name in table.feature_names)
    return _regression_table(
        "builtin:diabetes", table.data, table.target, ("progression",), features
    )


def _linnerud() -> LabelledDataset:
    """scikit-learn's Linnerud table: 20 men's exercise (chins, situps, jumps) and three
    physiological targets (weight, waist, pulse)."""
    from sklearn.datasets import load_linnerud

    table = load_linnerud()
    targets = tuple(name.lower() for name in table.target_names)
    features = tuple(name.lower() for name in table.feature_names)
    return _regression_table("builtin:linnerud", table.data, table.target, targets, features)


def series_dataset(
    name: str, table: SeriesTable, context_length: int | None = None, horizon: int | None = None
) -> LabelledDataset:
    """A time series as forecasting windows (`trainer.series`), of the table's default length
    unless a job asks for another."""
    context_length, horizon = context_length or table.context_length, horizon or table.horizon
    splits = {}
    for part in SPLIT_NAMES:
        contexts, targets = windows(table, part, context_length, horizon)
        splits[part] = Split(y=targets, x=contexts)
    shape = (context_length, len(table.columns))
    return LabelledDataset(
        name, "series", shape, (), splits, table.columns, task="forecasting",
        targets=table.series, series=table, horizon=horizon,
    )  # fmt: skip


def windowed(
    dataset: LabelledDataset, context_length: int | None, horizon: int | None
) -> LabelledDataset:
    """The dataset's windows as a job asks for them; data other than a series unchanged."""
    if dataset.series is None or (context_length, horizon) == (None, None):
        return dataset
    return series_dataset(dataset.name, dataset.series, context_length, horizon)


def _bbc_news() -> LabelledDataset:
    """BBC News articles and their topics (`trainer.text_corpora`). Language-model
    pretraining reads the texts of its training split only, so fine-tuning's test split stays
    unseen."""
    from trainer.text_corpora import load_bbc_news

    texts, labels, names = load_bbc_news()
    y = np.asarray(labels)
    full = Split(y=torch.from_numpy(y.astype(np.int64)), texts=tuple(texts))
    splits = {name: full.take(idx) for name, idx in fixed_split(y).items()}
    return LabelledDataset("builtin:bbc-news", "text", (), names, splits)


def _bbc_entities() -> LabelledDataset:
    """Sentences of the BBC News articles, their words tagged by a fixed rule
    (`trainer.tagged_news`: PER, MONEY, PERCENT, DATE), split 70/10/20 by article."""
    from trainer.tagged_news import TAGS, tagged_sentences

    words_of, tags_of, article_of = tagged_sentences()
    articles = np.asarray(article_of)
    full = Split(
        y=torch.from_numpy(encode_tag_sequences(tags_of, "builtin", TAGS)[0]),
        texts=tuple(" ".join(words) for words in words_of),
        words=tuple(words_of),
    )
    by_article = fixed_split(None, int(articles.max()) + 1)
    splits = {
        name: full.take(np.flatnonzero(np.isin(articles, chosen)))
        for name, chosen in by_article.items()
    }
    return LabelledDataset(
        "builtin:bbc-entities", "text", (), TAGS, splits, task="token_classification"
    )


def read_file_dataset(
    name: str,
    path: Path,
    fmt: str,
    labelled: bool,
    label_column: str = "label",
    limits: ReadLimits | None = None,
    task: str = "classification",
    time_column: str | None = None,
) -> LabelledDataset:
    """An uploaded dataset, read and checked by `trainer.readers` (`DatasetError`); a time
    series (`task: forecasting`) names its series in `label_column`, comma-separated."""
    if task == "forecasting":
        table = read_series(path, fmt, label_column, time_column, limits or ReadLimits())
        return series_dataset(name, table)
    parsed = read_dataset(path, fmt, labelled, label_column, limits or ReadLimits(), task)
    y = parsed.y if parsed.y is not None else np.full(len(parsed), UNLABELLED)
    full = Split(
        y=torch.from_numpy(y.astype(np.float32 if y.dtype.kind == "f" else np.int64)),
        x=None if parsed.x is None else torch.from_numpy(parsed.x),
        texts=parsed.texts,
        examples=parsed.examples,
        words=parsed.words,
    )
    # stratified by class
    labels_or_none = parsed.y if labelled and parsed.task == "classification" else None
    parts = (
        fixed_split(labels_or_none, len(parsed))
        if parsed.split is None
        else assigned_split(labels_or_none, parsed.split)
    )
    input_shape = () if parsed.x is None else tuple(parsed.x.shape[1:])
    splits = {part: full.take(np.sort(index)) for part, index in parts.items()}
    return LabelledDataset(
        name, parsed.modality, input_shape, parsed.labels, splits, parsed.feature_names,
        task=parsed.task, targets=parsed.targets,
        columns=None if parsed.columns is None else tuple(
            TableColumn(name=name, categories=None if categories is None else list(categories))
            for name, categories in parsed.columns
        ),
    )  # fmt: skip


# Uploaded datasets this process was handed: id -> loader.
_FILES: dict[str, Callable[[], LabelledDataset]] = {}


def register_file(
    name: str,
    path: Path,
    fmt: str,
    labelled: bool,
    label_column: str,
    task: str = "classification",
    time_column: str | None = None,
) -> None:
    """Make the uploaded dataset `name` (its file at `path`) loadable by `load_dataset`."""
    _FILES[name] = partial(
        read_file_dataset, name, path, fmt, labelled, label_column, None, task, time_column
    )


BUILTIN_DATASETS: dict[str, Callable[[], LabelledDataset]] = {
    "builtin:digits": _digits,
    "builtin:digits-rgb": _digits_rgb,
    "builtin:digits-m": _digits_m,
    "builtin:digits-scan": _digits_scan,
    "builtin:spoken-digits": partial(
        _spoken_digits, "builtin:spoken-digits", MALE_VOICES + FEMALE_VOICES
    ),
    # The speaker shift: male voices as the source, female ones as the target.
    "builtin:spoken-digits-male": partial(
        _spoken_digits, "builtin:spoken-digits-male", MALE_VOICES
    ),
    "builtin:spoken-digits-female": partial(
        _spoken_digits, "builtin:spoken-digits-female", FEMALE_VOICES
    ),
    # The harder shift: the female voices through a telephone line, from the male ones.
    "builtin:spoken-digits-female-telephone": partial(
        _spoken_digits, "builtin:spoken-digits-female-telephone", FEMALE_VOICES, telephone
    ),
    "builtin:breast-cancer": _breast_cancer,
    "builtin:digit-pairs": _digit_pairs,
    "builtin:diabetes": _diabetes,
    "builtin:linnerud": _linnerud,
    "builtin:bbc-news": _bbc_news,
    "builtin:bbc-entities": _bbc_entities,
    "builtin:co2": lambda: series_dataset("builtin:co2", series_builtins.co2()),
    "builtin:sunspots": lambda: series_dataset("builtin:sunspots", series_builtins.sunspots()),
    "builtin:macro": lambda: series_dataset("builtin:macro", series_builtins.macro()),
}


def dataset_name(ref: str | DatasetSelection) -> str:
    return ref if isinstance(ref, str) else ref.dataset


def dataset_names(data: TrainData | AdaptData) -> set[str]:
    """The datasets a spec's `data` section refers to."""
    return {dataset_name(ref) for _field, ref in data.references()}


def describe_builtin(name: str) -> DatasetInfo | None:
    return load_dataset(name).info() if name in BUILTIN_DATASETS else None


@cache
def load_dataset(name: str) -> LabelledDataset:
    loader = BUILTIN_DATASETS.get(name) or _FILES.get(name)
    if loader is None:
        raise KeyError(f"unknown dataset {name!r}")
    return loader()


def select(split: Split, ref: str | DatasetSelection, seed: int) -> Split:
    """The part of `split` that `ref` selects: all of it, or a subset by seed (stratified by
    class where it has classes)."""
    if isinstance(ref, str) or (ref.fraction is None and ref.per_class is None):
        return split
    rng = np.random.default_rng(seed)
    if split.y.dim() > 1:  # targets, label sets, tags: a random subset (per_class is refused)
        order = rng.permutation(len(split))
        return split.take(np.sort(order[: max(1, round(ref.fraction * len(split)))]))
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
    context_length: int | None = None,
    horizon: int | None = None,
) -> tuple[LabelledDataset, Split, Split, Split]:
    """The training dataset and its train, validation and test splits, each selected as its
    reference says; validation and test default to those splits of the training dataset.
    Series are cut into windows of `context_length` and `horizon` (default: the training
    dataset's), the same for all three."""
    dataset = windowed(load_dataset(dataset_name(train_ref)), context_length, horizon)

    def part(ref, name: str) -> Split:
        if not ref:
            return dataset.splits[name]
        named = load_dataset(dataset_name(ref))
        if dataset.series is not None:
            named = windowed(named, dataset.input_shape[0], dataset.horizon)
        whole = isinstance(ref, DatasetSelection) and ref.whole
        return select(every_example(named) if whole else named.splits[name], ref, seed)

    return (
        dataset,
        part(train_ref, "train"),
        part(validation_ref, "validation"),
        part(test_ref, "test"),
    )


def every_example(dataset: LabelledDataset) -> Split:
    """The dataset's examples of every split, as one."""
    parts = [dataset.splits[name] for name in SPLIT_NAMES]
    first = parts[0]

    def joined(field: str):
        if getattr(first, field) is None:
            return None
        values = [getattr(p, field) for p in parts]
        return torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(values, ())

    return Split(
        y=torch.cat([p.y for p in parts]),
        x=joined("x"),
        texts=joined("texts"),
        examples=joined("examples"),
        words=joined("words"),
    )
