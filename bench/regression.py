"""Regression on scikit-learn's diabetes table through the HTTP API: an MLP from scratch with
all the training targets and with 20% of them, and after `autoencoder` pretraining on the
training split's features (no targets) with the same 20%, beside scikit-learn's ridge and
gradient boosting on the same splits and the same subsets. Rewrites its section of
docs/RESULTS.md (or `--out`).

    .venv/bin/python -m bench.regression

Every model sees the same 70/10/20 split (`builtin:diabetes`, seed 0); a 20% subset is the job's
own selection (`fraction: 0.2` of the training split, drawn by the seed), which the baselines
draw with the same function. The MLPs stop early on the validation RMSE (patience 10) and keep
the best epoch; ridge's alpha and gradient boosting's tree count are chosen on the validation
split too. Nothing is chosen on test.
"""

import statistics

import httpx
import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp
from trainer.data import load_dataset, select
from trainer.spec import DatasetSelection

DATASET = "builtin:diabetes"
FEW = 0.2
MLP = {"architecture": "mlp", "params": {"hidden": [64, 64], "dropout": 0.1}}
FINETUNE = {"epochs": 200, "batch_size": 32, "learning_rate": 1e-3,
            "early_stopping_patience": 10}  # fmt: skip
PRETRAIN = {"epochs": 100, "batch_size": 32, "learning_rate": 1e-3}
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
TREES = (25, 50, 100, 200, 400)


def data(fraction: float | None) -> str | dict:
    return DATASET if fraction is None else {"dataset": DATASET, "fraction": fraction}


def finetune(seed: int, fraction: float | None) -> dict:
    return {"kind": "finetune", "model": MLP, "data": {"train": data(fraction)},
            "hyperparameters": hp(seed, **FINETUNE)}  # fmt: skip


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    runner = Runner(client)
    first = {}
    for seed in seeds:
        first[("mlp", "scratch, all targets", seed)] = finetune(seed, None)
        first[("mlp", f"scratch, {FEW:.0%} of the targets", seed)] = finetune(seed, FEW)
        first[("mlp", "autoencoder", seed)] = {
            "kind": "pretrain", "model": MLP, "method": {"name": "autoencoder"},
            "data": {"train": DATASET}, "hyperparameters": hp(seed, **PRETRAIN),
        }  # fmt: skip
    jobs = runner.run(first)
    second = {
        ("mlp", f"autoencoder -> {FEW:.0%} of the targets", seed): {
            **{k: v for k, v in finetune(seed, FEW).items() if k != "model"},
            "base_model_id": jobs[("mlp", "autoencoder", seed)]["result_model_id"],
        }
        for seed in seeds
    }
    jobs |= runner.run(second)
    return {"jobs": jobs, "specs": first | second, "baselines": baselines(seeds)}


def _scores(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    error = model.predict(x) - y
    return {"r2": 1 - (error**2).sum() / ((y - y.mean()) ** 2).sum(),
            "rmse": float(np.sqrt((error**2).mean()))}  # fmt: skip


def baselines(seeds: list[int]) -> dict:
    """Ridge (standardised features) and gradient boosting, each setting chosen on the
    validation split by RMSE, scored on test: per (model, rows, seed)."""
    splits = load_dataset(DATASET).splits
    validation, test = splits["validation"], splits["test"]
    found = {}
    for seed in seeds:
        for rows, fraction in (("all targets", None), (f"{FEW:.0%} of the targets", FEW)):
            ref = DATASET if fraction is None else DatasetSelection(dataset=DATASET, fraction=FEW)
            train = select(splits["train"], ref, seed)
            for name, candidates in (
                ("ridge", [make_pipeline(StandardScaler(), Ridge(alpha=a)) for a in ALPHAS]),
                ("gradient boosting", [GradientBoostingRegressor(n_estimators=n, random_state=seed)
                                       for n in TREES]),
            ):  # fmt: skip
                fitted = [m.fit(train.x.numpy(), train.y.numpy().ravel()) for m in candidates]
                best = min(fitted, key=lambda m: _scores(
                    m, validation.x.numpy(), validation.y.numpy().ravel())["rmse"])  # fmt: skip
                found[(name, rows, seed)] = _scores(best, test.x.numpy(), test.y.numpy().ravel())
    return found


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs, base = results["jobs"], results["baselines"]

    def mlp(row: str, metric: str) -> list[float]:
        return [jobs[("mlp", row, s)]["metrics"][f"test_{metric}"] for s in seeds]

    def other(name: str, rows: str, metric: str) -> list[float]:
        return [base[(name, rows, s)][metric] for s in seeds]

    few = f"{FEW:.0%} of the targets"
    rows = [
        ("MLP from scratch", "all", mlp("scratch, all targets", "r2"),
         mlp("scratch, all targets", "rmse")),
        ("ridge", "all", other("ridge", "all targets", "r2"),
         other("ridge", "all targets", "rmse")),
        ("gradient boosting", "all", other("gradient boosting", "all targets", "r2"),
         other("gradient boosting", "all targets", "rmse")),
        ("MLP from scratch", few, mlp(f"scratch, {few}", "r2"), mlp(f"scratch, {few}", "rmse")),
        ("MLP after autoencoder pretraining", few, mlp(f"autoencoder -> {few}", "r2"),
         mlp(f"autoencoder -> {few}", "rmse")),
        ("ridge", few, other("ridge", few, "r2"), other("ridge", few, "rmse")),
        ("gradient boosting", few, other("gradient boosting", few, "r2"),
         other("gradient boosting", few, "rmse")),
    ]  # fmt: skip
    lines = header("regression", seeds, elapsed_s, "Regression: scikit-learn's diabetes")
    lines[2] = lines[2].replace("in %; ", "")  # R² and RMSE are not percentages
    lines += [
        "Test R² and RMSE (the disease's progression, in its units) of each model, 3 seeds. "
        f"The {FEW:.0%} rows train on a fifth of the 308 training examples' targets; the "
        "autoencoder pretrains on all 308 examples' features, without targets.",
        "",
        "| model | training targets | test R² | test RMSE | R² per seed |",
        "|---|---|---|---|---|",
    ]
    for name, targets, r2, rmse in rows:
        lines.append(f"| {name} | {targets} | {cell(r2, 1.0, 3)} | {cell(rmse, 1.0, 1)} | "
                     f"{', '.join(f'{v:.3f}' for v in r2)} |")  # fmt: skip
    mean = statistics.mean
    checks = [
        (f"autoencoder pretraining beats scratch at {few} (R²: "
         f"{mean(rows[4][2]):.3f} against {mean(rows[3][2]):.3f})",
         mean(rows[4][2]) > mean(rows[3][2])),
        (f"the MLP is within 0.05 R² of ridge with all targets ({mean(rows[0][2]):.3f} against "
         f"{mean(rows[1][2]):.3f})", mean(rows[0][2]) > mean(rows[1][2]) - 0.05),
    ]  # fmt: skip
    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines), checks


if __name__ == "__main__":
    bench_main(__doc__.splitlines()[0], "bench.regression", run_experiments, report)
