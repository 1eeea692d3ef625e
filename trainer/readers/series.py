"""csv and parquet files of time series, for forecasting: a time column (dates, or numbers
counting time), one or more series columns to forecast and, in the other columns, numeric
covariates that the model reads in its context. Rows are sorted by time; the season and the
windows' defaults follow from the times' spacing (`season_of`)."""

from pathlib import Path

import numpy as np
import pandas as pd

from trainer.readers.common import DatasetError, ReadLimits
from trainer.readers.tables import load_table
from trainer.series import SeriesTable, longest_horizon, part_rows

# Rows per season by the spacing of the times (pandas' frequency codes, their first letters):
# a year of months or quarters, a year of weeks, a week of days, a day of hours.
SEASONS = {"M": 12, "Q": 4, "W": 52, "D": 7, "B": 5, "H": 24, "h": 24}
MIN_ROWS = 20  # fewer leave the validation and test parts no forecast worth scoring


def read(
    path: Path, fmt: str, series_columns: str, time_column: str, limits: ReadLimits
) -> SeriesTable:
    """The table in `path` as a time series: `series_columns` (comma-separated) forecast,
    every other column but `time_column` a covariate; raises `DatasetError` naming the row
    and column of a value that is not a number, or a column not found."""
    frame = load_table(path, fmt, limits)
    frame.columns = [str(name) for name in frame.columns]
    series = [name.strip() for name in series_columns.split(",")]
    for name in [time_column, *series]:
        if name not in frame.columns:
            message = f"not found; the columns are {', '.join(frame.columns)}"
            raise DatasetError(f"column '{name}'", message)
    if len(frame) < MIN_ROWS:
        raise DatasetError("file", f"{len(frame)} rows; a series needs at least {MIN_ROWS}")
    times = _times(frame[time_column], time_column)
    frame = frame.assign(**{time_column: times}).sort_values(time_column, kind="stable")
    columns = [*series, *(name for name in frame.columns if name not in (time_column, *series))]
    values = np.stack([_numbers(frame[name], name) for name in columns], axis=1)
    season = season_of(frame[time_column])
    context_length, horizon = default_window(len(values), season)
    return SeriesTable(values, tuple(columns), tuple(series), season, context_length, horizon)


def _times(column: pd.Series, name: str) -> pd.Series:
    """The time column as dates or numbers; a value that is neither is refused by its row."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column
    parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        message = f"must be a date or a number, not {column.iloc[row]!r}"
        raise DatasetError(f"row {row + 1}, column '{name}'", message)
    if parsed.duplicated().any():
        row = int(np.flatnonzero(parsed.duplicated().to_numpy())[0])
        raise DatasetError(f"row {row + 1}, column '{name}'", "a time given twice")
    return parsed


def _numbers(column: pd.Series, name: str) -> np.ndarray:
    """A series or covariate as float32; text, booleans and missing values are refused by the
    row (in time order) they are on."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna().to_numpy() | pd.api.types.is_bool_dtype(column)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        message = f"a series or covariate must be a number, not {column.iloc[row]!r}"
        raise DatasetError(f"row {row + 1} by time, column '{name}'", message)
    return numbers.to_numpy(np.float32)


def season_of(times: pd.Series) -> int:
    """Rows per season from the times' spacing: 12 for months, 4 for quarters, 52 for weeks, 7
    for days, 24 for hours; 1 (no season) for years, numbers or an irregular spacing."""
    if not pd.api.types.is_datetime64_any_dtype(times):
        return 1
    frequency = pd.infer_freq(pd.DatetimeIndex(times)) if len(times) >= 3 else None
    return SEASONS.get((frequency or "?")[0], 1)


def default_window(rows: int, season: int) -> tuple[int, int]:
    """Two seasons of context forecasting one (at least 8 rows forecasting 1), shortened as
    far as the series' parts need for every part to hold a forecast."""
    context_length, horizon = max(2 * season, 8), season
    sizes = {part: len(rows) for part, rows in part_rows(rows).items()}
    context_length = min(context_length, sizes["train"] // 2)
    return context_length, max(1, min(horizon, longest_horizon(sizes, context_length)))
