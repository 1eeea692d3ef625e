"""jsonl files: one JSON object per line. The first line's fields say what the file holds:
texts (fields text, label and split; multilabel: labels, a list, for label), or chat,
prompt/completion or preference examples in OpenAI's fine-tuning format (`chat`)."""

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from trainer.readers import chat
from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    add_line_split,
    encode_label_sets,
    encode_labels,
    encode_tag_sequences,
    json_safe,
    line_split,
)

JSONL_FIELDS = {
    "classification": ("text", "label", "split"),
    "multilabel": ("text", "labels", "split"),
    "token_classification": ("tokens", "tags", "split"),
}


def read(path: Path, labelled: bool, task: str = "classification") -> ParsedDataset:
    objects = _jsonl_objects(path)
    first = next(objects, None)
    if first is None:
        raise DatasetError("file", "no examples; every line is blank")
    lines = itertools.chain([first], objects)
    kind = chat.kind_of(first[1])
    if kind is not None:
        return chat.read(lines, kind, labelled)
    if task == "token_classification":
        return _read_tagged(lines, labelled)
    return _read_texts(lines, labelled, task if labelled else "classification")


def numbered_examples(path: Path) -> list[tuple[int, chat.Example]]:
    """A chat or preference file's examples (checked when it was uploaded), each with its line
    number."""
    objects = list(_jsonl_objects(path))
    kind = chat.kind_of(objects[0][1])
    return [
        (number, chat.parse_example(chat.without_split(fields), kind, f"line {number}"))
        for number, fields in objects
    ]


class TextRow(NamedTuple):
    """One checked example of a text file: its text, its label (a label set for multilabel;
    None unlabelled) and the split it gives (None where the file gives none)."""

    text: str
    label: str | int | list[str] | None
    split: str | None


def text_rows(
    lines: Iterable[tuple[str, dict]],
    labelled: bool,
    task: str,
    first_gave_split: bool | None = None,
) -> Iterator[TextRow]:
    """Each of `lines` (where it is, its fields) checked as a text example, one at a time: what
    reading a file whole (`read`) and checking one as a stream (`trainer.streaming`) share.
    `first_gave_split`: whether the dataset's first row gave a split, when `lines` are not
    its first (a shard after the first)."""
    fields_of_task = JSONL_FIELDS[task]
    for where, fields in lines:
        unknown = [name for name in fields if name not in fields_of_task]
        if unknown:
            message = f"unknown field; expected {', '.join(fields_of_task)}"
            if unknown[0] in ("label", "labels"):
                message += " (`labels`, a list, for task multilabel; `label` for the others)"
            raise DatasetError(f"{where}, field '{unknown[0]}'", message)
        if fields.get("text") is None:
            raise DatasetError(where, "`text` is missing")
        if not isinstance(fields["text"], str) or not fields["text"].strip():
            raise DatasetError(where, "`text` must be a non-empty string")
        label = None
        if labelled:
            label = _label_set(fields, where) if task == "multilabel" else _label(fields, where)
        split = line_split(fields, where, first_gave_split)
        first_gave_split = split is not None
        yield TextRow(fields["text"], label, split)


def encode_text_labels(labels: list, task: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A text file's labels (label sets for multilabel) as `ParsedDataset.y` and the names."""
    if task == "multilabel":
        return encode_label_sets(labels, "file")
    return encode_labels(np.array([str(v) for v in labels]), "file")


def _read_texts(lines: Iterable[tuple[int, dict]], labelled: bool, task: str) -> ParsedDataset:
    texts, labels, splits = [], [], []
    for text, label, split in text_rows(numbered(lines), labelled, task):
        texts.append(text)
        labels.append(label)
        if split is not None:
            splits.append(split)
    y, names = encode_text_labels(labels, task) if labelled else (None, ())
    split = np.array(splits, dtype=str) if splits else None
    return ParsedDataset("text", None, tuple(texts), y, names, split, None, task=task)


def numbered(lines: Iterable[tuple[int, dict]]) -> Iterator[tuple[str, dict]]:
    """(line number, fields) as (where, fields): "line 3"."""
    return ((f"line {number}", fields) for number, fields in lines)


def _read_tagged(lines: Iterable[tuple[int, dict]], labelled: bool) -> ParsedDataset:
    """Token tagging: each line's `tokens` (its words, a list of strings) and, labelled, its
    `tags` (one per word)."""
    fields_of_task = JSONL_FIELDS["token_classification"]
    words_of, tags_of, splits = [], [], []
    for number, fields in lines:
        where = f"line {number}"
        unknown = [name for name in fields if name not in fields_of_task]
        if unknown:
            message = f"unknown field; expected {', '.join(fields_of_task)}"
            raise DatasetError(f"{where}, field '{unknown[0]}'", message)
        words = fields.get("tokens")
        if not _strings(words):
            message = "must be a non-empty list of non-empty strings, the example's words"
            raise DatasetError(f"{where}, field 'tokens'", message)
        words_of.append(tuple(words))
        if labelled:
            tags = fields.get("tags")
            if not _strings(tags) or len(tags) != len(words):
                message = f"must be a list of {len(words)} tags, one per token"
                raise DatasetError(f"{where}, field 'tags'", message)
            tags_of.append(tags)
        add_line_split(fields, where, splits, first=len(words_of) == 1)
    y, names = encode_tag_sequences(tags_of, "file") if labelled else (None, ())
    split = np.array(splits, dtype=str) if splits else None
    texts = tuple(" ".join(words) for words in words_of)  # what a tokenizer trains on
    return ParsedDataset(
        "text", None, texts, y, names, split, None, task="token_classification" if labelled
        else "classification", words=tuple(words_of),
    )  # fmt: skip


def _strings(values: object) -> bool:
    return (
        isinstance(values, list)
        and len(values) > 0
        and all(isinstance(v, str) and v.strip() for v in values)
    )


def _label(fields: dict, where: str) -> str | int:
    label = fields.get("label")
    if label is None or label == "":
        raise DatasetError(where, "`label` is missing")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise DatasetError(where, "`label` must be a string or an integer")
    return label


def _label_set(fields: dict, where: str) -> list[str]:
    """A line's `labels`: a list of strings or integers, possibly empty; each kept once."""
    labels = fields.get("labels")
    if labels is None:
        raise DatasetError(where, "`labels` is missing (a list, [] for none)")
    if not isinstance(labels, list) or any(
        isinstance(v, bool) or not isinstance(v, str | int) or v == "" for v in labels
    ):
        raise DatasetError(f"{where}, field 'labels'", "must be a list of strings or integers")
    return list(dict.fromkeys(str(v) for v in labels))


def preview(path: Path, count: int) -> dict:
    return {"rows": [json_safe(fields) for _number, fields in _jsonl_objects(path, count)]}


def _jsonl_objects(path: Path, limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line, numbered from 1; at most `limit`."""
    with open(path, "rb") as file:
        yield from objects(file, limit)


def objects(file: BinaryIO, limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of an open file, numbered from 1, read
    one line at a time; at most `limit`."""
    found = 0
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
