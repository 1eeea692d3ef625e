"""What every format shares: the error, limits and result types, and the checks and helpers
used by more than one reader (format check, labels, splits, archive checks, JSON-safe values,
PNG encoding for previews)."""

import base64
import io
import math
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

if TYPE_CHECKING:  # chat's models check their examples with this module's errors
    from trainer.readers.chat import Example

FORMATS = ("npz", "csv", "parquet", "jsonl", "zip")
SPLIT_NAMES = ("train", "validation", "test")


class DatasetError(ValueError):
    """A file that cannot be a dataset; `where` says where (e.g. "file", "array 'x'",
    "row 12, column 'age'", "line 3", "archive member 'cats/x.png'")."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message

    def __reduce__(self):  # pickles (e.g. across processes) with both arguments
        return type(self), (self.where, self.message)


class UnlabelledFormat(DatasetError):
    """A file asked for with labels in a format that carries none (chat, preference): what
    was asked of the file is wrong, not the file."""


@dataclass(frozen=True)
class ReadLimits:
    max_members: int = 10_000  # zip members
    max_uncompressed_bytes: int = 2 * 1024**3  # expanded archive; also the decoded image array
    max_compression_ratio: float = 100.0  # uncompressed / compressed, archive and per member
    max_image_pixels: int = 4096 * 4096  # per image (decompression-bomb guard)
    max_categories: int = 100  # distinct values of one categorical column


# eq=False: the fields are arrays, which have no single truth value to compare or hash by.
@dataclass(frozen=True, eq=False)
class ParsedDataset:
    modality: str  # "image", "tabular", "text", "audio", "chat" or "preference"
    # float32; images (N, C, H, W), tabular (N, F), audio (N, samples) at SAMPLE_RATE; else None
    x: np.ndarray | None
    texts: tuple[str, ...] | None  # text only
    y: np.ndarray | None  # int64 indices into `labels`; None when unlabelled
    labels: tuple[str, ...]  # class names in index order; () when unlabelled
    split: np.ndarray | None  # per-example str in SPLIT_NAMES, when the file assigns splits
    feature_names: tuple[str, ...] | None  # tabular: names after encoding ("colour=red")
    examples: "tuple[Example, ...] | None" = None  # chat and preference only
    # token tagging: each example's words; `y` is then int64 (N, longest), a tag per word
    words: tuple[tuple[str, ...], ...] | None = None
    # regression: the numeric targets' names; `y` is then float32 (N, len(targets))
    targets: tuple[str, ...] = ()
    # what the labels are for (trainer.heads): multilabel's `y` is float32 (N, len(labels)),
    # 1 where the example has the label
    task: str = "classification"
    # tables: each feature column's name and, if categorical, its categories in encoding order
    columns: tuple[tuple[str, tuple[str, ...] | None], ...] | None = None

    def __len__(self) -> int:
        if self.examples is not None:
            return len(self.examples)
        return len(self.texts) if self.texts is not None else len(self.x)


def check_not_empty(path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError("file", f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if path.stat().st_size == 0:
        raise DatasetError("file", "the file is empty")


# Labels and splits


def encode_labels(values: Any, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label indices and class names (the str of each value) for a labelled dataset."""
    names, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    labels = _class_order(names.tolist())
    check_storable(labels, where, "a label")
    if len(labels) < 2:
        message = f"only one class ('{labels[0]}'); a classifier needs at least two"
        raise DatasetError(where, message)
    position = {name: i for i, name in enumerate(labels)}
    y = np.array([position[name] for name in names.tolist()], dtype=np.int64)[inverse]
    return y.reshape(-1), tuple(labels)


LABEL_SEPARATOR = ";"  # between the labels of a multilabel table cell


def label_set(cell: str) -> list[str]:
    """A multilabel cell's labels: `;`-separated, blanks around them dropped, each once."""
    return list(dict.fromkeys(p.strip() for p in cell.split(LABEL_SEPARATOR) if p.strip()))


def encode_label_sets(sets: list[list[str]], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Multi-hot float32 (N, L) rows and the label names, in `_class_order`, for a multilabel
    dataset: each example has a set of labels, possibly empty."""
    labels = _class_order(sorted({label for labels in sets for label in labels}))
    check_storable(labels, where, "a label")
    if len(labels) < 2:
        message = f"{len(labels)} distinct label(s); multilabel data needs at least two"
        raise DatasetError(where, message)
    position = {name: i for i, name in enumerate(labels)}
    y = np.zeros((len(sets), len(labels)), dtype=np.float32)
    for row, labels_of_row in enumerate(sets):
        y[row, [position[name] for name in labels_of_row]] = 1.0
    return y, tuple(labels)


IGNORED_TAG = -100  # a tag's place past an example's words (cross-entropy's ignore_index)


def encode_tag_sequences(
    tags_of: list[list[str]], where: str, names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """int64 (N, longest) tag indices, IGNORED_TAG past each example's words, and the tag
    names (`O` first, then sorted, unless `names` gives them)."""
    if names is None:
        found = {tag for tags in tags_of for tag in tags}
        names = tuple(["O"] * ("O" in found) + sorted(found - {"O"}))
        check_storable(list(names), where, "a tag")
        if len(names) < 2:
            raise DatasetError(where, f"{len(names)} distinct tag(s); tagging needs at least two")
    position = {name: i for i, name in enumerate(names)}
    y = np.full((len(tags_of), max(map(len, tags_of))), IGNORED_TAG, dtype=np.int64)
    for row, tags in enumerate(tags_of):
        y[row, : len(tags)] = [position[t] for t in tags]
    return y, names


def check_storable(names: list[str], where: str, what: str) -> None:
    """Names that are stored with the dataset (labels, columns) hold no NUL character, which
    PostgreSQL cannot store."""
    for name in names:
        if "\x00" in name:
            raise DatasetError(where, f"{what} contains the NUL character (U+0000): {name!r}")


def _class_order(names: list[str]) -> list[str]:
    """Numeric order when every name is a number (so "2" comes before "10"), else sorted."""
    try:
        numbers = [float(name) for name in names]
    except ValueError:
        return sorted(names)
    if not all(math.isfinite(n) for n in numbers):
        return sorted(names)
    return [name for _number, name in sorted(zip(numbers, names, strict=True))]


def check_split(values: Any, where_of: Callable[[int], str], numbered: bool = False) -> np.ndarray:
    """Split names as a str array; `where_of(i)` locates example i, and `numbered` names it
    in the message too (for arrays, where the location alone does not say which)."""
    values = np.asarray(values).astype(str)
    bad = np.flatnonzero(~np.isin(values, SPLIT_NAMES))
    if bad.size:
        i = int(bad[0])
        at = f" at example {i}" if numbered else ""
        message = f"value '{values[i]}'{at} is not one of {', '.join(SPLIT_NAMES)}"
        raise DatasetError(where_of(i), message)
    return values


def line_split(fields: dict, where: str, first_gave_split: bool | None) -> str | None:
    """The `split` of a jsonl line (its `fields`, at `where`), None where it gives none. A file
    assigns splits on every line or on none; `first_gave_split` says whether its first line
    gave one (None: this is the first line)."""
    if first_gave_split is not None and ("split" in fields) != first_gave_split:
        message = "`split` must be given on every line or on none"
        raise DatasetError(f"{where}, field 'split'", message)
    if "split" not in fields:
        return None
    value = str(fields["split"])
    check_split([value], lambda _i: f"{where}, field 'split'")
    return value


def add_line_split(fields: dict, where: str, splits: list[str], first: bool) -> None:
    """Appends the `split` of a jsonl line to `splits` (`line_split`); `first`: its first line."""
    value = line_split(fields, where, None if first else bool(splits))
    if value is not None:
        splits.append(value)


# Zip archives (npz files are zip archives too)


def member_where(info: zipfile.ZipInfo) -> str:
    return f"archive member '{info.filename}'"


def check_archive(
    archive: zipfile.ZipFile, limits: ReadLimits, check_ratio: bool = True
) -> list[zipfile.ZipInfo]:
    """Every member, checked from the central directory alone: nothing is decompressed yet."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        message = f"the archive has {len(infos)} members; at most {limits.max_members} are allowed"
        raise DatasetError("file", message)
    for info in infos:
        if _unsafe_name(info):
            raise DatasetError(member_where(info), "unsafe name (absolute, '..' or symlink)")
    expanded = sum(info.file_size for info in infos)
    if expanded > limits.max_uncompressed_bytes:
        message = (
            f"the archive would expand to {expanded} bytes; "
            f"at most {limits.max_uncompressed_bytes} are allowed"
        )
        raise DatasetError("file", message)
    if check_ratio:
        for info in infos:
            _check_ratio(member_where(info), info.file_size, info.compress_size, limits)
        _check_ratio("file", expanded, sum(info.compress_size for info in infos), limits)
    return infos


def _unsafe_name(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    return (
        name.startswith("/")
        or name[1:2] == ":"  # a Windows drive
        or "\\" in name
        or "\x00" in name
        or ".." in name.split("/")
        or stat.S_ISLNK(info.external_attr >> 16)
    )


def _check_ratio(where: str, expanded: int, compressed: int, limits: ReadLimits) -> None:
    if compressed > 0 and expanded / compressed > limits.max_compression_ratio:
        ratio, most = expanded / compressed, limits.max_compression_ratio
        raise DatasetError(where, f"compression ratio {ratio:.0f}:1 exceeds {most:g}:1")


# Previews


def json_safe(value: Any) -> Any:
    """`value` as JSON can carry it: native types, NaN as null, dates and the like as text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else (None if math.isnan(value) else str(value))
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    return str(value)


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
