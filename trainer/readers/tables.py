"""csv and parquet files: one row per example, a label column (regression: one or more
numeric target columns; multilabel: each row's labels separated by `;`, empty for none), an
optional split column, and feature columns of numbers, booleans or text (text one-hot encoded
as categories)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    ReadLimits,
    check_split,
    check_storable,
    encode_label_sets,
    encode_labels,
    json_safe,
    label_set,
)

SPLIT_COLUMN = "split"


def read(
    path: Path,
    fmt: str,
    labelled: bool,
    label_column: str,
    limits: ReadLimits,
    task: str = "classification",
) -> ParsedDataset:
    """With `task: regression`, `label_column` names one or more numeric target columns,
    separated by commas; with `multilabel`, its cells are label sets."""
    numeric = task == "regression"
    frame = load_table(path, fmt, limits)
    frame.columns = [str(name) for name in frame.columns]
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise DatasetError(f"column '{repeated[0]}'", "appears more than once")
    label_columns = (
        [name.strip() for name in label_column.split(",")] if numeric else [label_column]
    )
    for name in label_columns if labelled else ():
        if name not in frame.columns:
            message = f"not found; the columns are {', '.join(frame.columns)}"
            raise DatasetError(f"column '{name}'", message)
    if not labelled:
        frame = frame.drop(columns=label_columns, errors="ignore")
    if len(frame) == 0:
        raise DatasetError("file", "no rows; the file has a header but no data")
    if task == "multilabel" and labelled:  # an empty cell is an empty label set
        frame[label_column] = frame[label_column].fillna("").astype(str)
        _check_missing(frame.drop(columns=[label_column]))
    else:
        _check_missing(frame)
    features = [name for name in frame.columns if name not in (*label_columns, SPLIT_COLUMN)]
    if not features:
        raise DatasetError("file", "no feature columns besides the label")
    blocks, names, columns = [], [], []
    for name in features:
        block, block_names, categories = _feature(frame[name], name, limits)
        blocks.append(block)
        names.extend(block_names)
        columns.append((name, categories))
    check_storable(names, "file", "a feature name (a column, or a column=category)")
    targets: tuple[str, ...] = ()
    if numeric and labelled:
        y, labels, targets = _targets(frame, label_columns), (), tuple(label_columns)
    elif task == "multilabel" and labelled:
        sets = [label_set(cell) for cell in frame[label_column]]
        y, labels = encode_label_sets(sets, f"column '{label_column}'")
    elif labelled:
        y, labels = encode_labels(frame[label_column].to_numpy(), f"column '{label_column}'")
    else:
        y, labels = None, ()
    split = (
        check_split(frame[SPLIT_COLUMN], lambda i: f"row {i + 1}, column 'split'")
        if SPLIT_COLUMN in frame.columns
        else None
    )
    x = np.concatenate(blocks, axis=1)
    task = task if labelled else "classification"
    return ParsedDataset(
        "tabular", x, None, y, labels, split, tuple(names), targets=targets, task=task,
        columns=tuple(columns),
    )  # fmt: skip


def _targets(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Numeric target columns as float32 (N, T); a column of text or booleans is refused."""
    for name in columns:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            first = next((i for i, v in enumerate(column) if not _is_number(v)), 0)
            message = f"a regression target must be a number, not {column.iloc[first]!r}"
            raise DatasetError(f"row {first + 1}, column '{name}'", message)
    return np.concatenate([_numbers(frame[name].to_numpy(), name) for name in columns], axis=1)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def preview(path: Path, fmt: str, count: int) -> dict:
    if fmt == "csv":
        frame = load_table(path, fmt, rows=count)
        return {"rows": [json_safe(row) for row in frame.to_dict("records")]}
    return {"rows": _parquet_head(path, count)}


def load_table(
    path: Path, fmt: str, limits: ReadLimits | None = None, rows: int | None = None
) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path, nrows=rows, low_memory=False)
        return _read_parquet(path, limits or ReadLimits())
    except DatasetError:
        raise
    except (ValueError, OSError, pa.ArrowException) as error:
        raise DatasetError("file", f"not a valid {fmt} file: {error}") from None


# What one value takes once decoded, at least: pandas holds numbers as 8-byte floats and text as
# 8-byte references (to the category's one string).
VALUE_BYTES = 8


def _read_parquet(path: Path, limits: ReadLimits) -> pd.DataFrame:
    """The table, refused before it is expanded when it would take more than the budget.

    Parquet compresses, run-length and dictionary encodes, so a file of kilobytes can decode to
    gigabytes (a decompression bomb). The footer gives each column's value count and size after
    decompression; text columns are then read as dictionaries (each distinct string once) and
    their decoded length summed from the dictionary before any string is repeated."""
    budget = limits.max_uncompressed_bytes
    metadata = pq.ParquetFile(path).metadata
    chunks = [
        metadata.row_group(group).column(column)
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    ]
    _check_decoded(
        sum(max(c.num_values * VALUE_BYTES, c.total_uncompressed_size) for c in chunks), budget
    )
    text = [field.name for field in pq.read_schema(path) if _is_bytes(field.type)]
    table = pq.ParquetFile(path, read_dictionary=text).read()
    decoded = metadata.num_rows * VALUE_BYTES * len(table.columns)
    for column in table.columns:
        if pa.types.is_dictionary(column.type) and _is_bytes(column.type.value_type):
            for chunk in column.chunks:
                lengths = pc.take(pc.binary_length(chunk.dictionary), chunk.indices)
                decoded += pc.sum(lengths).as_py() or 0
    _check_decoded(decoded, budget)
    return table.to_pandas()  # text columns stay categorical: no string is copied per row


def _is_bytes(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _check_decoded(size: int, budget: int) -> None:
    if size > budget:
        message = f"the table would decode to about {size} bytes; at most {budget} are allowed"
        raise DatasetError("file", message)


def _parquet_head(path: Path, count: int) -> list[dict]:
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=max(count, 1))
        head = next(batches, None)
    except (ValueError, OSError, pa.ArrowException) as error:
        raise DatasetError("file", f"not a valid parquet file: {error}") from None
    return [] if head is None else [json_safe(row) for row in head.to_pylist()[:count]]


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


def _feature(
    column: pd.Series, name: str, limits: ReadLimits
) -> tuple[np.ndarray, list[str], tuple[str, ...] | None]:
    """One column as (N, k) float32 features, their k names and, for a categorical column,
    its categories in the order of its one-hot features."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=np.float32)[:, None], [name], None
    if pd.api.types.is_numeric_dtype(column.dtype):
        return _numbers(column.to_numpy(dtype=np.float64), name), [name], None
    if not _is_text(column):
        message = f"has type {column.dtype}; a feature must hold numbers, booleans or text"
        raise DatasetError(f"column '{name}'", message)
    text = column.astype(str).to_numpy(dtype=object)
    parsed = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
    numeric = ~np.isnan(parsed)
    if numeric.all():
        return _numbers(parsed, name), [name], None
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
    names = [f"{name}={category}" for category in categories]
    return one_hot, names, tuple(str(category) for category in categories)


def _is_text(column: pd.Series) -> bool:
    dtype = column.dtype
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


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
