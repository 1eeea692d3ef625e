"""Forecasting on statsmodels' bundled series through the HTTP API: GRU, LSTM and transformer
forecasters beside the seasonal-naive forecast and exponential smoothing (statsmodels' ETS) on
the same test windows. Rewrites its section of docs/RESULTS.md (or `--out`).

    .venv/bin/python -m bench.forecasting

Every model forecasts the same test windows of each series (`trainer.series`: the last 20% of
the rows, each forecast wholly inside them, its context the rows before it), at the datasets'
default windows. The networks train on the first 70% and stop early on the validation MASE
(patience 10), keeping the best epoch. The seasonal-naive forecast repeats the context's last
season; ETS is refitted at each forecast origin on every row before it (so it learns from the
validation and earlier test rows, which the networks only read as context). MASE divides the
MAE by the training part's in-sample seasonal-naive MAE (Hyndman and Koehler, 2006); with
several series, MASE and RMSE are the means over the series.
"""

import statistics
import warnings

import httpx
import numpy as np
import torch

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp
from trainer.data import load_dataset
from trainer.series import mase_scale, seasonal_naive

# ETS per series: (trend, damped, seasonal) in statsmodels' terms. CO2 has a trend and a yearly
# cycle; sunspots' 11-year cycle as a season of 11; the macro growth rates are seasonally
# adjusted and level, so simple exponential smoothing.
DATASETS = {
    "builtin:co2": ("add", True, "add"),
    "builtin:sunspots": (None, False, "add"),
    "builtin:macro": (None, False, None),
}
ARCHITECTURES = {
    "gru": {"hidden": 64, "embedding_dim": 32},
    "lstm": {"hidden": 64, "embedding_dim": 32},
    "transformer": {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1},
}
TRAINING = {"epochs": 40, "batch_size": 32, "learning_rate": 3e-3, "early_stopping_patience": 10}
NETWORKS = {"gru": "GRU", "lstm": "LSTM", "transformer": "transformer"}


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    specs = {
        (dataset, architecture, seed): {
            "kind": "finetune",
            "model": {"architecture": architecture, "params": params},
            "data": {"train": dataset},
            "hyperparameters": hp(seed, **TRAINING),
        }
        for dataset in DATASETS
        for architecture, params in ARCHITECTURES.items()
        for seed in seeds
    }
    jobs = Runner(client).run(specs)
    return {"jobs": jobs, "specs": specs, "baselines": baselines()}


def _scores(forecast: torch.Tensor, y: torch.Tensor, scale: list[float]) -> dict[str, float]:
    """MASE and RMSE over every step of every window (N, horizon, S), the means over series."""
    error = (forecast.double() - y.double()).reshape(-1, y.shape[-1])
    mase = error.abs().mean(0) / torch.tensor(scale, dtype=torch.float64)
    return {"mase": mase.mean().item(), "rmse": error.pow(2).mean(0).sqrt().mean().item()}


def _ets_forecasts(dataset: str) -> torch.Tensor:
    """ETS refitted at each test window's origin on every row before it, forecasting the
    window's horizon, per series: (N, horizon, S)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    data = load_dataset(dataset)
    table, test = data.series, data.splits["test"]
    trend, damped, seasonal = DATASETS[dataset]
    series, horizon = table.series_values().astype(np.float64), data.horizon
    first_origin = table.part_rows()["test"].start
    forecasts = np.empty(tuple(test.y.shape))
    for n in range(len(test)):
        for s in range(series.shape[1]):
            model = ExponentialSmoothing(
                series[: first_origin + n, s], trend=trend, damped_trend=damped,
                seasonal=seasonal, seasonal_periods=table.season if seasonal else None,
                initialization_method="estimated",
            )  # fmt: skip
            with warnings.catch_warnings():  # convergence warnings on a few origins
                warnings.simplefilter("ignore")
                forecasts[n, :, s] = model.fit().forecast(horizon)
    return torch.from_numpy(forecasts)


def baselines() -> dict:
    """The seasonal-naive forecast and ETS on each dataset's test windows."""
    found = {}
    for dataset in DATASETS:
        data = load_dataset(dataset)
        test, scale = data.splits["test"], mase_scale(data.series)
        series = len(data.targets)
        naive = seasonal_naive(test.x[:, :, :series], data.horizon, data.series.season)
        found[(dataset, "seasonal naive")] = _scores(naive, test.y, scale)
        found[(dataset, "ETS")] = _scores(_ets_forecasts(dataset), test.y, scale)
    return found


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs, base = results["jobs"], results["baselines"]
    lines = header("forecasting", seeds, elapsed_s, "Forecasting: statsmodels' bundled series")
    lines[2] = lines[2].replace("in %; ", "")  # MASE and RMSE are not percentages
    lines += [
        "Test MASE (below 1 beats the training part's in-sample seasonal-naive forecast) and "
        "RMSE (in the series' units) over every step of the test windows, at each dataset's "
        "default windows: co2 24 months forecasting 12 (season 12), sunspots 33 years "
        "forecasting 11 (season 11), macro 8 quarters of 5 columns forecasting 4 of the 3 "
        "growth series (season 4). The baselines are deterministic: no spread. The networks "
        "read each context's series as changes from its last row and forecast changes from it "
        "(`trainer/heads/forecasting.py`): a series that trends past its training range is "
        "forecast from where it is (before, CO2's networks scored MASE 7.7 to 9.1). ETS has "
        "more to learn from than the networks: it is refitted at each origin on every row "
        "before it, the validation and earlier test rows included.",
        "",
        "| series | model | test MASE | test RMSE | MASE per seed |",
        "|---|---|---|---|---|",
    ]
    best_network, checks = {}, []
    for dataset in DATASETS:
        name = dataset.removeprefix("builtin:")
        for baseline in ("seasonal naive", "ETS"):
            scores = base[(dataset, baseline)]
            lines.append(f"| {name} | {baseline} | {scores['mase']:.3f} | "
                         f"{scores['rmse']:.3f} | |")  # fmt: skip
        means = {}
        for architecture, label in NETWORKS.items():
            metrics = [jobs[(dataset, architecture, s)]["metrics"] for s in seeds]
            mase, rmse = [m["test_mase"] for m in metrics], [m["test_rmse"] for m in metrics]
            means[label] = statistics.mean(mase)
            lines.append(f"| {name} | {label} | {cell(mase, 1.0, 3)} | {cell(rmse, 1.0, 3)} | "
                         f"{', '.join(f'{v:.3f}' for v in mase)} |")  # fmt: skip
        best = min(means, key=means.get)
        best_network[dataset] = (best, means[best])
        naive, ets = base[(dataset, "seasonal naive")]["mase"], base[(dataset, "ETS")]["mase"]
        checks += [
            (f"{name}: the best network ({best}, MASE {means[best]:.3f}) beats the seasonal-"
             f"naive forecast ({naive:.3f})", means[best] < naive),
            (f"{name}: the best network ({best}, MASE {means[best]:.3f}) beats ETS "
             f"({ets:.3f})", means[best] < ets),
        ]  # fmt: skip
    lines += checks_and_specs(checks, _specs_by_row(results["specs"]), seeds[0])
    return "\n".join(lines), checks


def _specs_by_row(specs: dict) -> dict:
    """The specs keyed as `checks_and_specs` shows them: (series, architecture, seed)."""
    return {(dataset.removeprefix("builtin:"), arch, seed): spec
            for (dataset, arch, seed), spec in specs.items()}  # fmt: skip


if __name__ == "__main__":
    bench_main(__doc__.splitlines()[0], "bench.forecasting", run_experiments, report)
