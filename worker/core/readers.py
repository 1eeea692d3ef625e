"""Uploaded dataset files, read into arrays and checked, with errors that say where.

The API reads an upload with these functions before storing it, and the trainer loads it with
the same ones, so a file that passed the upload check loads the same way at training time.
Files come from users: archives are checked from their central directory before anything is
decompressed, every read is capped, images are size-checked before their pixels are decoded,
and nothing is ever unpickled.
"""

import base64
import io
import json
import math
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FORMATS = ("npz", "csv", "parquet", "jsonl", "zip")
SPLIT_NAMES = ("train", "validation", "test")

EXTENSIONS = {
    ".npz": "npz",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "zip",
}
NPZ_ARRAYS = ("x", "y", "split")
JSONL_FIELDS = ("text", "label", "split")
SPLIT_COLUMN = "split"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
# Modes Pillow gives greyscale PNG/JPEG files; "I" and "I;16*" hold 16-bit values.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class DatasetError(ValueError):
    """A file that cannot be a dataset; `where` says where (e.g. "file", "array 'x'",
    "row 12, column 'age'", "line 3", "archive member 'cats/x.png'")."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message

    def __reduce__(self):  # pickles (e.g. across processes) with both arguments
        return type(self), (self.where, self.message)


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
    modality: str  # "image", "tabular" or "text"
    x: np.ndarray | None  # float32; images (N, C, H, W), tabular (N, F); None for text
    texts: tuple[str, ...] | None  # text only
    y: np.ndarray | None  # int64 indices into `labels`; None when unlabelled
    labels: tuple[str, ...]  # class names in index order; () when unlabelled
    split: np.ndarray | None  # per-example str in SPLIT_NAMES, when the file assigns splits
    feature_names: tuple[str, ...] | None  # tabular: names after encoding ("colour=red")

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.x)


def format_of(filename: str) -> str:
    """The dataset format of an uploaded file, by its extension."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in EXTENSIONS:
        kind = f"file type '{suffix}'" if suffix else "file without an extension"
        message = f"unsupported {kind}; upload one of .npz, .csv, .parquet, .jsonl, .zip"
        raise DatasetError("file", message)
    return EXTENSIONS[suffix]


def read_dataset(
    path: Path,
    fmt: str,
    labelled: bool,
    label_column: str = "label",
    limits: ReadLimits = ReadLimits(),
) -> ParsedDataset:
    """The whole dataset in `path`, checked; raises `DatasetError` naming where it is wrong."""
    path = Path(path)
    _check_not_empty(path, fmt)
    if fmt == "npz":
        return _read_npz(path, labelled, limits)
    if fmt in ("csv", "parquet"):
        return _read_table(_load_table(path, fmt), labelled, label_column, limits)
    if fmt == "jsonl":
        return _read_jsonl(path, labelled)
    return _read_zip(path, labelled, limits)


def preview(
    path: Path,
    fmt: str,
    label_column: str = "label",
    count: int = 5,
    limits: ReadLimits = ReadLimits(),
) -> dict:
    """The first `count` examples for display: {"rows": [...]} for tables, text and tabular
    npz files, {"images": [{"label", "png_base64"}, ...]} for images. Reads little else.

    Rows show the file's own columns or fields, the label among them, so `label_column` changes
    nothing today; it is taken so that callers pass what they pass to `read_dataset`."""
    path = Path(path)
    _check_not_empty(path, fmt)
    if fmt == "npz":
        return _preview_npz(path, count, limits)
    if fmt == "csv":
        frame = _load_table(path, fmt, rows=count)
        return {"rows": [_json_safe(row) for row in frame.to_dict("records")]}
    if fmt == "parquet":
        return {"rows": _parquet_head(path, count)}
    if fmt == "jsonl":
        return {"rows": [_json_safe(fields) for _number, fields in _jsonl_objects(path, count)]}
    return _preview_zip(path, count, limits)


# Shared checks


def _check_not_empty(path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError("file", f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if path.stat().st_size == 0:
        raise DatasetError("file", "the file is empty")


def _class_order(names: list[str]) -> list[str]:
    """Numeric order when every name is a number (so "2" comes before "10"), else sorted."""
    try:
        numbers = [float(name) for name in names]
    except ValueError:
        return sorted(names)
    if not all(math.isfinite(n) for n in numbers):
        return sorted(names)
    return [name for _number, name in sorted(zip(numbers, names, strict=True))]


def _encode_labels(values: Any, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label indices and class names (the str of each value) for a labelled dataset."""
    names, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    labels = _class_order(names.tolist())
    if len(labels) < 2:
        message = f"only one class ('{labels[0]}'); a classifier needs at least two"
        raise DatasetError(where, message)
    position = {name: i for i, name in enumerate(labels)}
    y = np.array([position[name] for name in names.tolist()], dtype=np.int64)[inverse]
    return y.reshape(-1), tuple(labels)


def _check_split(values: Any, where_of: Callable[[int], str], numbered: bool = False) -> np.ndarray:
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


def _json_safe(value: Any) -> Any:
    """`value` as JSON can carry it: native types, NaN as null, dates and the like as text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else (None if math.isnan(value) else str(value))
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    return str(value)


# npz: arrays x, y and split


def _open_npz(path: Path, limits: ReadLimits) -> np.lib.npyio.NpzFile:
    with open(path, "rb") as file:
        magic = file.read(4)
    # np.load would take any other file for a pickle (refused, but with a misleading message).
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        reason = "not a zip archive of arrays (save it with np.savez)"
        raise DatasetError("file", f"not a valid npz file: {reason}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise DatasetError("file", f"not a valid npz file: {error}") from None
    try:
        # No ratio check: sparse arrays compress far beyond 100:1 and are fine. The declared
        # sizes cap what can be decompressed, as zipfile never reads past them.
        _check_archive(npz.zip, limits, check_ratio=False)
    except DatasetError:
        npz.close()
        raise
    unknown = [name for name in npz.files if name not in NPZ_ARRAYS]
    if unknown:
        npz.close()
        raise DatasetError(f"array '{unknown[0]}'", "unknown array; expected x, y, split")
    return npz


def _npz_array(npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    where = f"array '{name}'"
    try:
        return npz[name]
    except ValueError as error:
        if "allow_pickle" in str(error):
            message = (
                "holds Python objects, which are never unpickled; save numeric or string arrays"
            )
            raise DatasetError(where, message) from None
        raise DatasetError(where, f"cannot be read: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError, MemoryError) as error:
        raise DatasetError(where, f"cannot be read: {error}") from None


def _npz_inputs(x: np.ndarray) -> tuple[str, np.ndarray]:
    """The modality and x as (N, F) or channels-first (N, C, H, W), its values unchanged."""
    where, shape = "array 'x'", x.shape
    if x.dtype.kind not in "biuf":
        raise DatasetError(where, f"holds {x.dtype} values; inputs must be numbers")
    if x.ndim >= 1 and shape[0] == 0:
        raise DatasetError(where, "has no examples")
    if 0 not in shape[1:]:
        if x.ndim == 2:
            return "tabular", x
        if x.ndim == 3:
            return "image", x[:, None]
        if x.ndim == 4 and shape[1] in (1, 3, 4):
            return "image", x
        if x.ndim == 4 and shape[3] in (1, 3, 4) and shape[1] > 4:
            return "image", x.transpose(0, 3, 1, 2)
    message = f"shape {shape} is not (N, features), (N, H, W), (N, C, H, W) or (N, H, W, C)"
    raise DatasetError(where, message)


def _as_float32(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # values too large for float32 become inf, reported next
        x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        what = "NaN" if np.isnan(x[i]).any() else "infinity"
        raise DatasetError("array 'x'", f"{what} at example {i}")
    return x


def _npz_labels(npz: np.lib.npyio.NpzFile, count: int) -> tuple[np.ndarray, tuple[str, ...]]:
    where = "array 'y'"
    if "y" not in npz.files:
        raise DatasetError(where, "not found; a labelled dataset needs its labels in `y`")
    y = _npz_array(npz, "y")
    if y.ndim != 1:
        raise DatasetError(where, f"has shape {y.shape}; labels must be 1-D, one per example")
    if y.dtype.kind not in "iufUS":
        raise DatasetError(where, f"holds {y.dtype} values; labels must be integers or strings")
    if len(y) != count:
        raise DatasetError(where, f"has {len(y)} labels for {count} examples")
    if y.dtype.kind == "f":
        # Class indices are often saved as floats; whole numbers are taken as the integers.
        fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if fractional.size:
            i = int(fractional[0])
            message = f"{y[i]} at example {i} is not a whole number; labels must be integers"
            raise DatasetError(where, message + " or strings")
        y = y.astype(np.int64)
    return _encode_labels(_decoded(y), where)


def _npz_split(npz: np.lib.npyio.NpzFile, count: int) -> np.ndarray | None:
    if "split" not in npz.files:
        return None
    where = "array 'split'"
    split = _npz_array(npz, "split")
    if split.ndim != 1 or split.dtype.kind not in "US":
        raise DatasetError(
            where, f"must be a 1-D array of strings, not {split.dtype} {split.shape}"
        )
    if len(split) != count:
        raise DatasetError(where, f"has {len(split)} values for {count} examples")
    return _check_split(_decoded(split), lambda _i: where, numbered=True)


def _decoded(strings: np.ndarray) -> np.ndarray:
    return np.char.decode(strings, "utf-8") if strings.dtype.kind == "S" else strings


def _read_npz(path: Path, labelled: bool, limits: ReadLimits) -> ParsedDataset:
    with _open_npz(path, limits) as npz:
        if "x" not in npz.files:
            raise DatasetError("array 'x'", "not found; an npz dataset needs its inputs in `x`")
        modality, x = _npz_inputs(_npz_array(npz, "x"))
        x = _as_float32(x)
        y, labels = _npz_labels(npz, len(x)) if labelled else (None, ())
        split = _npz_split(npz, len(x))
    names = tuple(f"x{i}" for i in range(x.shape[1])) if modality == "tabular" else None
    return ParsedDataset(modality, x, None, y, labels, split, names)


def _preview_npz(path: Path, count: int, limits: ReadLimits) -> dict:
    with _open_npz(path, limits) as npz:
        if "x" not in npz.files:
            raise DatasetError("array 'x'", "not found; an npz dataset needs its inputs in `x`")
        modality, x = _npz_inputs(_npz_array(npz, "x"))
        y = _decoded(_npz_array(npz, "y")) if "y" in npz.files else None
    x = x[:count]
    label = [_json_safe(y[i]) if y is not None and i < len(y) else None for i in range(len(x))]
    if modality == "tabular":
        rows = [{"x": _json_safe(row)} for row in x]
        if y is not None:
            rows = [{**row, "y": label[i]} for i, row in enumerate(rows)]
        return {"rows": rows}
    images = [
        {
            "label": None if label[i] is None else str(label[i]),
            "png_base64": _png_base64(_display(image)),
        }
        for i, image in enumerate(x)
    ]
    return {"images": images}


def _display(image: np.ndarray) -> np.ndarray:
    """A (C, H, W) image of any value range as (H, W[, C]) uint8, stretched to 0-255."""
    image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    pixels = scaled.round().astype(np.uint8).transpose(1, 2, 0)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# csv and parquet: one row per example


def _load_table(path: Path, fmt: str, rows: int | None = None) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path, nrows=rows, low_memory=False)
        return pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError, pa.ArrowException) as error:
        raise DatasetError("file", f"not a valid {fmt} file: {error}") from None


def _parquet_head(path: Path, count: int) -> list[dict]:
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=max(count, 1))
        head = next(batches, None)
    except (ValueError, OSError, pa.ArrowException) as error:
        raise DatasetError("file", f"not a valid parquet file: {error}") from None
    return [] if head is None else [_json_safe(row) for row in head.to_pylist()[:count]]


def _is_text(column: pd.Series) -> bool:
    dtype = column.dtype
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def _check_missing(frame: pd.DataFrame) -> None:
    """The first missing cell, reading row by row: NaN, None, or empty text."""
    missing = frame.isna().to_numpy()
    for j, name in enumerate(frame.columns):
        if _is_text(frame[name]):
            missing[:, j] |= frame[name].astype(str).str.strip().eq("").to_numpy()
    rows, columns = np.nonzero(missing)
    if rows.size:
        where = f"row {rows[0] + 1}, column '{frame.columns[columns[0]]}'"
        raise DatasetError(where, "missing value")


def _numbers(values: np.ndarray, name: str) -> np.ndarray:
    """A numeric column as (N, 1) float32; NaN was already reported as missing."""
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise DatasetError(f"row {infinite[0] + 1}, column '{name}'", "infinity")
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    too_large = np.flatnonzero(np.isinf(out))
    if too_large.size:
        i = int(too_large[0])
        raise DatasetError(f"row {i + 1}, column '{name}'", f"{values[i]:g} is too large")
    return out[:, None]


def _feature(column: pd.Series, name: str, limits: ReadLimits) -> tuple[np.ndarray, list[str]]:
    """One column as (N, k) float32 features and their k names."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=np.float32)[:, None], [name]
    if pd.api.types.is_numeric_dtype(column.dtype):
        return _numbers(column.to_numpy(dtype=np.float64), name), [name]
    if not _is_text(column):
        message = f"has type {column.dtype}; a feature must hold numbers, booleans or text"
        raise DatasetError(f"column '{name}'", message)
    text = column.astype(str).to_numpy(dtype=object)
    parsed = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
    numeric = ~np.isnan(parsed)
    if numeric.all():
        return _numbers(parsed, name), [name]
    # Mostly numbers: a typo in a numeric column, not a category.
    if numeric.mean() >= 0.9:
        i = int(np.argmin(numeric))
        raise DatasetError(f"row {i + 1}, column '{name}'", f"'{text[i]}' is not a number")
    categories, codes = np.unique(text, return_inverse=True)
    if len(categories) > limits.max_categories:
        message = (
            f"has {len(categories)} distinct values; "
            f"a categorical feature may have at most {limits.max_categories}"
        )
        raise DatasetError(f"column '{name}'", message)
    one_hot = np.eye(len(categories), dtype=np.float32)[codes.reshape(-1)]
    return one_hot, [f"{name}={category}" for category in categories]


def _read_table(
    frame: pd.DataFrame, labelled: bool, label_column: str, limits: ReadLimits
) -> ParsedDataset:
    frame.columns = [str(name) for name in frame.columns]
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise DatasetError(f"column '{repeated[0]}'", "appears more than once")
    if labelled and label_column not in frame.columns:
        message = f"not found; the columns are {', '.join(frame.columns)}"
        raise DatasetError(f"column '{label_column}'", message)
    if not labelled:
        frame = frame.drop(columns=[label_column], errors="ignore")
    if len(frame) == 0:
        raise DatasetError("file", "no rows; the file has a header but no data")
    _check_missing(frame)
    features = [name for name in frame.columns if name not in (label_column, SPLIT_COLUMN)]
    if not features:
        raise DatasetError("file", "no feature columns besides the label")
    blocks, names = [], []
    for name in features:
        block, block_names = _feature(frame[name], name, limits)
        blocks.append(block)
        names.extend(block_names)
    y, labels = (
        _encode_labels(frame[label_column].to_numpy(), f"column '{label_column}'")
        if labelled
        else (None, ())
    )
    split = (
        _check_split(frame[SPLIT_COLUMN], lambda i: f"row {i + 1}, column 'split'")
        if SPLIT_COLUMN in frame.columns
        else None
    )
    x = np.concatenate(blocks, axis=1)
    return ParsedDataset("tabular", x, None, y, labels, split, tuple(names))


# jsonl: one JSON object per line


def _jsonl_objects(path: Path, limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line, numbered from 1; at most `limit`."""
    found = 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if limit is not None and found >= limit:
                return
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(f"line {number}", f"not UTF-8 text: {error.reason}") from None
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"invalid JSON: {error.msg} at column {error.colno}"
                raise DatasetError(f"line {number}", message) from None
            except RecursionError:
                raise DatasetError(f"line {number}", "invalid JSON: nested too deeply") from None
            if not isinstance(fields, dict):
                raise DatasetError(f"line {number}", "not a JSON object")
            found += 1
            yield number, fields


def _read_jsonl(path: Path, labelled: bool) -> ParsedDataset:
    texts, labels, splits = [], [], []
    for number, fields in _jsonl_objects(path):
        where = f"line {number}"
        unknown = [name for name in fields if name not in JSONL_FIELDS]
        if unknown:
            message = "unknown field; expected text, label, split"
            raise DatasetError(f"{where}, field '{unknown[0]}'", message)
        if fields.get("text") is None:
            raise DatasetError(where, "`text` is missing")
        if not isinstance(fields["text"], str) or not fields["text"].strip():
            raise DatasetError(where, "`text` must be a non-empty string")
        texts.append(fields["text"])
        if labelled:
            label = fields.get("label")
            if label is None or label == "":
                raise DatasetError(where, "`label` is missing")
            if isinstance(label, bool) or not isinstance(label, str | int):
                raise DatasetError(where, "`label` must be a string or an integer")
            labels.append(label)
        # A file assigns splits to every example or to none; the first line decides which.
        if len(texts) > 1 and ("split" in fields) != bool(splits):
            raise DatasetError(where, "`split` must be given on every line or on none")
        if "split" in fields:
            splits.append(str(fields["split"]))
            _check_split(splits[-1:], lambda _i, w=where: f"{w}, field 'split'")
    if not texts:
        raise DatasetError("file", "no examples; every line is blank")
    y, names = (
        _encode_labels(np.array([str(v) for v in labels]), "file") if labelled else (None, ())
    )
    split = np.array(splits, dtype=str) if splits else None
    return ParsedDataset("text", None, tuple(texts), y, names, split, None)


# zip: folders of PNG or JPEG images


def _member(info: zipfile.ZipInfo) -> str:
    return f"archive member '{info.filename}'"


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


def _check_archive(
    archive: zipfile.ZipFile, limits: ReadLimits, check_ratio: bool = True
) -> list[zipfile.ZipInfo]:
    """Every member, checked from the central directory alone: nothing is decompressed yet."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        message = f"the archive has {len(infos)} members; at most {limits.max_members} are allowed"
        raise DatasetError("file", message)
    for info in infos:
        if _unsafe_name(info):
            raise DatasetError(_member(info), "unsafe name (absolute, '..' or symlink)")
    expanded = sum(info.file_size for info in infos)
    if expanded > limits.max_uncompressed_bytes:
        message = (
            f"the archive would expand to {expanded} bytes; "
            f"at most {limits.max_uncompressed_bytes} are allowed"
        )
        raise DatasetError("file", message)
    if check_ratio:
        for info in infos:
            _check_ratio(_member(info), info.file_size, info.compress_size, limits)
        _check_ratio("file", expanded, sum(info.compress_size for info in infos), limits)
    return infos


def _check_ratio(where: str, expanded: int, compressed: int, limits: ReadLimits) -> None:
    if compressed > 0 and expanded / compressed > limits.max_compression_ratio:
        ratio, most = expanded / compressed, limits.max_compression_ratio
        raise DatasetError(where, f"compression ratio {ratio:.0f}:1 exceeds {most:g}:1")


def _ignored(name: str) -> bool:
    """Directories and what archivers add on their own: __MACOSX/, .DS_Store, dotfiles."""
    parts = name.split("/")
    return name.endswith("/") or "__MACOSX" in parts or any(p.startswith(".") for p in parts)


def _image_members(
    archive: zipfile.ZipFile, limits: ReadLimits, labelled: bool
) -> list[tuple[zipfile.ZipInfo, str | None]]:
    """The image members in name order, each with its class folder (None when flat)."""
    infos = sorted(
        (info for info in _check_archive(archive, limits) if not _ignored(info.filename)),
        key=lambda info: info.filename,
    )
    if not infos:
        raise DatasetError("file", "the archive holds no images")
    paths = [info.filename.split("/") for info in infos]
    if len({path[0] for path in paths}) == 1 and all(len(path) >= 3 for path in paths):
        paths = [path[1:] for path in paths]  # one folder around the class folders
    foldered = len(paths[0]) == 2
    members = []
    for info, path in zip(infos, paths, strict=True):
        if not info.filename.lower().endswith(IMAGE_SUFFIXES):
            raise DatasetError(_member(info), "not a PNG or JPEG file")
        if len(path) > 2 or (len(path) == 2) != foldered:
            message = "expected class-folder/image or a flat list of images"
            raise DatasetError(_member(info), message)
        members.append((info, path[0] if foldered else None))
    if labelled and not foldered:
        message = "no class folders; a labelled image dataset needs one folder per class"
        raise DatasetError("file", message)
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The member's bytes, never more than it declares (nor than `budget`) held in memory."""
    where = _member(info)
    if info.flag_bits & 0x1:
        raise DatasetError(where, "is encrypted")
    if info.file_size > budget:
        raise DatasetError("file", "the archive expands past its allowed size")
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        # zipfile stops at the declared size; a member holding more fails its CRC check here.
        message = f"does not match its declared size and checksum, or is damaged: {error}"
        raise DatasetError(where, message) from None
    if len(data) > info.file_size:
        raise DatasetError(where, f"holds more than its declared {info.file_size} bytes")
    return data


def _open_image(data: bytes, where: str, limits: ReadLimits) -> Image.Image:
    """The decoded image; its size is checked before any pixel is decoded."""
    try:
        # formats=: no other Pillow decoder ever sees the bytes.
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if image.format not in IMAGE_FORMATS:
            raise DatasetError(where, "not a PNG or JPEG file")
        if image.width * image.height > limits.max_image_pixels:
            message = (
                f"is {image.width}x{image.height} pixels; "
                f"at most {limits.max_image_pixels} pixels are allowed"
            )
            raise DatasetError(where, message)
        image.load()
    except DatasetError:
        raise
    except Exception as error:  # Pillow raises many kinds of error on malformed input
        raise DatasetError(where, f"cannot decode the image: {error}") from None
    return image


def _pixels(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 for a greyscale image, (H, W, 3) for a colour one."""
    if image.mode in WIDE_GREY_MODES:
        # Pillow's convert("L") clips 16-bit values at 255; scale them instead.
        return np.clip(np.asarray(image, dtype=np.float64) / 257, 0, 255).round().astype(np.uint8)
    return np.asarray(image.convert("L" if image.mode in GREY_MODES else "RGB"))


def _read_zip(path: Path, labelled: bool, limits: ReadLimits) -> ParsedDataset:
    with _open_zip(path) as archive:
        members = _image_members(archive, limits, labelled)
        images, budget, decoded, size = [], limits.max_uncompressed_bytes, 0, None
        for info, _folder in members:
            where = _member(info)
            data = _read_member(archive, info, budget)
            budget -= len(data)
            with _open_image(data, where, limits) as image:
                size = size or image.size
                if image.size != size:
                    message = (
                        f"is {image.width}x{image.height} pixels; the first image is "
                        f"{size[0]}x{size[1]}; all images must have one size"
                    )
                    raise DatasetError(where, message)
                pixels = _pixels(image)
            # Small PNGs can decode to huge arrays, which the archive checks cannot see.
            decoded += pixels.size * 4  # as float32
            if decoded > limits.max_uncompressed_bytes:
                raise DatasetError("file", _too_large(decoded, limits))
            images.append(pixels)
    colour = any(pixels.ndim == 3 for pixels in images)
    width, height = size
    channels = 3 if colour else 1
    total = len(images) * channels * height * width * 4
    if total > limits.max_uncompressed_bytes:
        raise DatasetError("file", _too_large(total, limits))
    x = np.empty((len(images), channels, height, width), dtype=np.float32)
    for i, pixels in enumerate(images):
        x[i] = pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels  # grey fills all three
    if labelled:
        y, labels = _encode_labels([folder for _info, folder in members], "file")
    else:
        y, labels = None, ()
    return ParsedDataset("image", x, None, y, labels, None, None)


def _too_large(size: int, limits: ReadLimits) -> str:
    return (
        f"the images would decode to {size} bytes; "
        f"at most {limits.max_uncompressed_bytes} are allowed"
    )


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DatasetError("file", f"not a valid zip file: {error}") from None


def _preview_zip(path: Path, count: int, limits: ReadLimits) -> dict:
    shown = []
    with _open_zip(path) as archive:
        budget = limits.max_uncompressed_bytes
        for info, folder in _image_members(archive, limits, labelled=False)[:count]:
            data = _read_member(archive, info, budget)
            budget -= len(data)
            with _open_image(data, _member(info), limits) as image:
                shown.append({"label": folder, "png_base64": _png_base64(_pixels(image))})
    return {"images": shown}
