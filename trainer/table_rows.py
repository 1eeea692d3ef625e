"""Rows of a table, as a user's CSV has them (objects keyed by column name, categories as
strings), encoded into the features a tabular model takes: the encoding that
`trainer.readers.tables` gave its training file, kept in the model's card (`columns`)."""

import math
from collections.abc import Sequence

import numpy as np

from trainer.card import TableColumn


class RowError(ValueError):
    """A row that the model cannot read; `where` names the row and column, as
    `inputs[2].colour`."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def encode_rows(rows: Sequence[object], columns: Sequence[TableColumn]) -> np.ndarray:
    """float32 (N, features): each column's number, or its category one-hot, in the card's
    order. Every column must be given, and no other."""
    known = {column.name for column in columns}
    encoded = []
    for i, row in enumerate(rows):
        where = f"inputs[{i}]"
        if not isinstance(row, dict):
            raise RowError(where, "must be an object of column values, as every other row")
        unknown = [name for name in row if name not in known]
        if unknown:
            message = f"unknown column; the model's columns are {_listed(list(known))}"
            raise RowError(f"{where}.{unknown[0]}", message)
        features = []
        for column in columns:
            if column.name not in row:
                raise RowError(f"{where}.{column.name}", "missing")
            features.extend(_encoded(row[column.name], column, f"{where}.{column.name}"))
        encoded.append(features)
    return np.asarray(encoded, dtype=np.float32)


def _encoded(value: object, column: TableColumn, where: str) -> list[float]:
    if column.categories is None:
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise RowError(where, f"must be a finite number or a boolean, not {value!r}")
        return [float(value)]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(where, f"must be one of the column's categories, not {value!r}")
    if str(value) not in column.categories:
        message = f"unknown category {str(value)!r}; the column's are {_listed(column.categories)}"
        raise RowError(where, message)
    return [float(str(value) == category) for category in column.categories]


def _listed(names: list[str], most: int = 20) -> str:
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")
