"""Uploaded dataset files, read into arrays and checked, with errors that say where.

The API reads an upload with these functions before storing it, and the trainer loads it with
the same ones, so a file that passed the upload check loads the same way at training time.
Files come from users: archives are checked from their central directory before anything is
decompressed, every read is capped, images are size-checked before their pixels are decoded,
and nothing is ever unpickled.

This module is the public API and dispatches by format to one module per format, each with
`read` and `preview`:

- `common`: `DatasetError`, `ReadLimits`, `ParsedDataset` and the checks formats share
- `arrays`: npz files (arrays x, y and split)
- `tables`: csv and parquet files (one row per example)
- `series`: csv and parquet files of time series (one row per time), for forecasting
- `jsonl`: jsonl files (one JSON object per line): texts, or the examples `chat` reads
- `chat`: chat, prompt/completion and preference examples in OpenAI's fine-tuning format
- `images`: zip archives of PNG or JPEG images in class folders
- `audio`: zip archives of WAV or FLAC clips in class folders
- `archives`: what the zip readers share
"""

from pathlib import Path, PurePath

from trainer.readers import arrays, audio, images, jsonl, series, tables
from trainer.readers.common import (
    FORMATS,
    SPLIT_NAMES,
    DatasetError,
    ParsedDataset,
    ReadLimits,
    UnlabelledFormat,
    check_not_empty,
)
from trainer.series import SeriesTable

__all__ = [
    "FORMATS",
    "SPLIT_NAMES",
    "DatasetError",
    "ParsedDataset",
    "ReadLimits",
    "UnlabelledFormat",
    "format_of",
    "preview",
    "read_dataset",
    "read_series",
]

# The formats that can carry each task's labels, where not all of them can.
TASK_FORMATS = {
    "regression": ("csv", "parquet", "npz"),
    "multilabel": ("csv", "parquet", "jsonl", "zip"),
    "token_classification": ("jsonl",),
}

EXTENSIONS = {
    ".npz": "npz",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "zip",
}


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
    limits: ReadLimits = ReadLimits(),  # noqa: B008 (frozen: one shared default is safe)
    task: str = "classification",
) -> ParsedDataset:
    """The whole dataset in `path`, checked; raises `DatasetError` naming where it is wrong.
    With `task: regression` the label column, or the comma-separated columns it names, are
    numeric targets; with `multilabel`, each example has a set of labels (`;`-separated in a
    table's label column or a zip archive's `labels.csv`, a `labels` list in jsonl)."""
    path = Path(path)
    check_not_empty(path, fmt)
    if fmt not in TASK_FORMATS.get(task, FORMATS):
        formats = " or ".join(f".{f}" for f in TASK_FORMATS[task])
        raise DatasetError("file", f"{task} data comes as a {formats} file")
    if fmt == "npz":
        return arrays.read(path, labelled, limits, task)
    if fmt in ("csv", "parquet"):
        return tables.read(path, fmt, labelled, label_column, limits, task)
    if fmt == "jsonl":
        return jsonl.read(path, labelled, task)
    if audio.holds_audio(path, limits):
        return audio.read(path, labelled, limits, task)
    return images.read(path, labelled, limits, task)


def read_series(
    path: Path, fmt: str, series_columns: str, time_column: str | None, limits: ReadLimits
) -> SeriesTable:
    """A time series in a csv or parquet table (`trainer.readers.series`), checked."""
    path = Path(path)
    check_not_empty(path, fmt)
    if fmt not in ("csv", "parquet"):
        raise DatasetError("file", "a time series comes as a .csv or .parquet table")
    if time_column is None:
        raise DatasetError("time_column", "a time series needs the column of its times")
    return series.read(path, fmt, series_columns, time_column, limits)


def preview(
    path: Path,
    fmt: str,
    label_column: str = "label",
    count: int = 5,
    limits: ReadLimits = ReadLimits(),  # noqa: B008 (frozen: one shared default is safe)
) -> dict:
    """The first `count` examples for display: {"rows": [...]} for tables, text and tabular
    npz files, jsonl examples and audio clips (label, file, seconds), {"images": [{"label",
    "png_base64"}, ...]} for images. Reads little else.

    Rows show the file's own columns or fields, the label among them, so `label_column` changes
    nothing today; it is taken so that callers pass what they pass to `read_dataset`."""
    path = Path(path)
    check_not_empty(path, fmt)
    if fmt == "npz":
        return arrays.preview(path, count, limits)
    if fmt in ("csv", "parquet"):
        return tables.preview(path, fmt, count)
    if fmt == "jsonl":
        return jsonl.preview(path, count)
    if audio.holds_audio(path, limits):
        return audio.preview(path, count, limits)
    return images.preview(path, count, limits)
