"""jsonl files: one JSON object per line, with fields text, label and split."""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    check_split,
    encode_labels,
    json_safe,
)

JSONL_FIELDS = ("text", "label", "split")


def read(path: Path, labelled: bool) -> ParsedDataset:
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
            check_split(splits[-1:], lambda _i, w=where: f"{w}, field 'split'")
    if not texts:
        raise DatasetError("file", "no examples; every line is blank")
    y, names = encode_labels(np.array([str(v) for v in labels]), "file") if labelled else (None, ())
    split = np.array(splits, dtype=str) if splits else None
    return ParsedDataset("text", None, tuple(texts), y, names, split, None)


def preview(path: Path, count: int) -> dict:
    return {"rows": [json_safe(fields) for _number, fields in _jsonl_objects(path, count)]}


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
