"""The built-in time series, from statsmodels' bundled data sets (nothing is downloaded).

Each says its season (the seasonal-naive benchmark's lag, and MASE's) and its windows' default
context and horizon, which a job may change (`TrainData.context_length`, `horizon`).
"""

import numpy as np

from trainer.series import SeriesTable


def co2() -> SeriesTable:
    """Mauna Loa's atmospheric CO2 (ppm), weekly from March 1958 to December 2001, as monthly
    means (526 months): 59 weeks are missing, and a month with none measured is interpolated
    between its neighbours. Season 12 (the yearly cycle); two years of context forecast one."""
    from statsmodels.datasets import co2 as source

    weekly = source.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate()
    values = monthly.to_numpy(np.float32).reshape(-1, 1)
    return SeriesTable(values, ("co2",), ("co2",), season=12, context_length=24, horizon=12)


def sunspots() -> SeriesTable:
    """Yearly sunspot numbers, 1700-2008 (309 years). The solar cycle is not a season (its
    length wanders from 9 to 14 years), but its mean of about 11 years is the lag that makes
    the naive benchmark worth beating: over the test part, repeating the last 11 years forecasts
    the next 11 with a mean absolute error of 29, repeating the last year with 59. Season 11;
    three cycles of context forecast one."""
    from statsmodels.datasets import sunspots as source

    values = source.load_pandas().data[["SUNACTIVITY"]].to_numpy(np.float32)
    return SeriesTable(
        values, ("sunactivity",), ("sunactivity",), season=11, context_length=33, horizon=11
    )


MACRO_SERIES = ("realgdp", "realcons", "realinv")  # forecast, as growth rates
MACRO_COVARIATES = ("unemp", "tbilrate")  # read in the context only, as levels


def macro() -> SeriesTable:
    """US macroeconomic data, quarterly 1959-2009: the growth of real GDP, consumption and
    investment (percent per quarter, 100 log-differences: 202 quarters), with the unemployment
    and 3-month treasury bill rates (percent) as covariates: several series and a finance-like
    case. Season 4; two years of context forecast one."""
    from statsmodels.datasets import macrodata

    table = macrodata.load_pandas().data
    growth = 100 * np.diff(np.log(table[list(MACRO_SERIES)].to_numpy(np.float64)), axis=0)
    covariates = table[list(MACRO_COVARIATES)].to_numpy(np.float64)[1:]
    values = np.concatenate([growth, covariates], axis=1).astype(np.float32)
    columns = tuple(f"{name}_growth" for name in MACRO_SERIES) + MACRO_COVARIATES
    return SeriesTable(
        values, columns, columns[: len(MACRO_SERIES)], season=4, context_length=8, horizon=4
    )
