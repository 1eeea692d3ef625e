"""Time series for forecasting: a time-ordered table, split in time and cut into windows.

The table's rows are split in time, not at random: the first 70% train, the next 10%
validate, the last 20% test, so that a model is never scored on a time it trained on. A window
is `context_length` rows of every column (the series and any covariates) and the next
`horizon` rows of the series, to forecast. A window belongs to the part its forecast falls in,
wholly: no forecast crosses a part's boundary, so no value a model is scored on was ever a
training target. Its context may reach back into the part before, as a forecaster's would:
the past is known when the forecast is made (without that, a validation part of 10% could hold
no window at all once the context is longer than it).
"""

from dataclasses import dataclass

import numpy as np
import torch

PART_SHARES = {"train": 0.7, "validation": 0.1, "test": 0.2}  # in time order


def part_rows(total: int) -> dict[str, range]:
    """The rows of each part of a series of `total` rows, in time order."""
    train = round(total * PART_SHARES["train"])
    validation = round(total * PART_SHARES["validation"])
    return {
        "train": range(0, train),
        "validation": range(train, train + validation),
        "test": range(train + validation, total),
    }


@dataclass(frozen=True)
class SeriesTable:
    """A time-ordered table: the series to forecast, then any covariates, one row per time."""

    values: np.ndarray  # float32 (rows, columns), oldest first
    columns: tuple[str, ...]  # every column, in `values`' order: the series first
    series: tuple[str, ...]  # the columns forecast
    season: int  # rows per season: the seasonal-naive forecast's lag, and MASE's
    context_length: int  # a window's default context, in rows
    horizon: int  # a window's default forecast, in rows

    def part_rows(self) -> dict[str, range]:
        """The rows of each part, in time order."""
        return part_rows(len(self.values))

    def series_values(self) -> np.ndarray:
        return self.values[:, : len(self.series)]


def longest_horizon(part_sizes: dict[str, int], context_length: int) -> int:
    """The longest horizon that leaves every part at least one window: a training window's
    context must fit in the training part; validation and test windows' contexts may reach
    back, their forecasts not out of their part."""
    return min(part_sizes["train"] - context_length, part_sizes["validation"], part_sizes["test"])


def windows(
    table: SeriesTable, part: str, context_length: int, horizon: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of `part`: contexts (N, context_length, columns) and the forecasts that
    follow them (N, horizon, series), one window per forecast start, oldest first."""
    rows = table.part_rows()[part]
    starts = range(max(rows.start, context_length), rows.stop - horizon + 1)
    contexts = np.stack([table.values[t - context_length : t] for t in starts])
    series = table.series_values()
    targets = np.stack([series[t : t + horizon] for t in starts])
    return torch.from_numpy(contexts), torch.from_numpy(targets)


def seasonal_naive(context: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """The seasonal-naive forecast of contexts (N, L, S): each step the value one season
    before it, the last season repeated ((N, horizon, S)). Needs L >= season."""
    last_season = context[:, -season:]
    repeats = -(-horizon // season)  # ceil
    return last_season.repeat(1, repeats, 1)[:, :horizon]


def mase_scale(table: SeriesTable) -> list[float]:
    """Per series, the mean absolute error of the in-sample seasonal-naive forecast over the
    training part (y_t - y_(t-season)): Hyndman and Koehler's (2006) MASE denominator, so a
    MASE below 1 beats that benchmark as fitted on the training data."""
    rows = table.part_rows()["train"]
    train = table.series_values()[rows.start : rows.stop]
    differences = np.abs(train[table.season :] - train[: -table.season]).mean(0)
    # A series that repeats itself exactly has no scale: its errors are left unscaled.
    return np.where(differences > 0, differences, 1.0).astype(float).tolist()
