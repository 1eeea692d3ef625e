"""Sweeps, measured: does early stopping pay, and does the service cost a sweep anything?

1. Early stopping. The same search space (a CNN on builtin:digits-m, 27 epochs: learning
   rate, batch size, hidden width) and the same number of trials through the service, with
   several sweep seeds: `random` with no pruner, and `tpe` with each pruner asked for
   (`hyperband` and `successive_halving`; the epoch the resource). Printed: the best trial's
   validation accuracy (its objective) and test accuracy (held out, never used to choose), the
   epochs every trial trained in all, and the CPU seconds the trainers spent (the worker's
   reaped children), mean ± sd over the seeds. Target: the pruned sweeps within 1 point of the
   unpruned ones' best test accuracy at <= 40% of their epochs.
2. The service's cost. The same study (random sampler, the same seed, so the same trials) run
   one trial at a time in one Python process (a fresh interpreter) over a plain PyTorch loop
   (`bench.overhead`'s), and through tunery (API, Celery worker, a trainer process per trial,
   Postgres and Redis), in rounds, each side first in turn: trials per hour, tunery ÷
   in-process, the median of the rounds. Target: >= 0.9.

3. Against the hand-picked defaults (`--measure defaults`). Two rows of docs/RESULTS.md, the
   few-label CNN from scratch and the MiniLM linear probe: their hand-picked spec, and a sweep
   over that spec's optimiser settings (tpe, successive halving, the same epochs), with the
   same seed for the job (so the same labelled subset) and the sampler. The best trial is
   chosen on validation; its test accuracy is set beside the defaults'. Written to
   docs/RESULTS.md.

The service runs on a private Postgres and Redis (`tests/servers.py`, or the ones named by
TUNERY_TEST_DATABASE_URL and TUNERY_TEST_REDIS_URL) with its deployed defaults.

Run: `.venv/bin/python -m bench.sweep` (1 and 2: about 50 and 12 minutes on 2 cores; `--seeds
1 --trials 4` for a quick look), `.venv/bin/python -m bench.sweep --measure defaults` (3: about
45 minutes on a quiet machine).
"""

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import optuna
import torch

from app.sweep_spec import SweepSpec
from bench import hf_text, transfer
from bench.overhead import Case, plain_fit
from bench.results import write_section
from bench.timing import Row, cpu_seconds, machine, postgres_redis_stack, service_processes, table
from tests import servers
from tests.stack import Stack

SPACE = {
    "hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "hyperparameters.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "model.params.hidden": {"type": "int", "low": 16, "high": 256, "log": True},
}


@dataclass(frozen=True)
class Benchmark:
    """What every trial trains: a CNN on `train` for `epochs`, with the SPACE's learning rate,
    batch size and width."""

    train: str | dict
    epochs: int

    def job(self) -> dict:
        return {
            "kind": "finetune",
            "model": {"architecture": "cnn"},
            "data": {"train": self.train},
            "hyperparameters": {"epochs": self.epochs},
            "resources": {"device": "cpu"},
        }


# Digits on photographed backgrounds: far from saturated (the best trials reach ~90% on
# validation, whose 180 images rarely tie at the top), and 27 epochs, so that the rungs of a
# reduction factor of 3 (epochs 1, 3, 9) lie well before the end.
DIGITS_M = Benchmark("builtin:digits-m", 27)
UNPRUNED = {"sampler": "random", "pruner": {"name": "none"}}
PRUNED = {
    "sampler": "tpe",
    "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
}


@dataclass(frozen=True)
class SweepRun:
    best_validation: float
    best_test: float
    epochs: int  # trained by all its trials together
    trainer_cpu_seconds: float
    seconds: float
    trials: int
    best_params: dict


def trainer_cpu(stack: Stack) -> float:
    """CPU seconds of the trainers that have ended: each is reaped by the worker process (or
    its zygote) that started it, which counts it among its children."""
    found = service_processes(stack)
    return sum(
        cpu_seconds(pid, reaped_children=True) or 0.0
        for pid, process in found.items()
        if process.role == "worker"
    )


def epochs_trained(client: httpx.Client, job_id: str) -> int:
    """The epochs a trial's job trained to their end, by its training-loss points: a pruned
    trial's trainer may finish an epoch after the one its pruner judged."""
    points = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
    return sum(1 for p in points if (p["name"], p["split"]) == ("loss", "train"))


def run_sweep(client: httpx.Client, stack: Stack, body: dict, timeout_s: float = 3600) -> SweepRun:
    cpu_before, started = trainer_cpu(stack), time.monotonic()
    created = client.post("/v1/sweeps", json=body)
    created.raise_for_status()
    sweep_id = created.json()["id"]
    deadline = time.monotonic() + timeout_s
    while (sweep := client.get(f"/v1/sweeps/{sweep_id}").json())["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep_id} still {sweep['status']}")
        time.sleep(1)
    seconds = time.monotonic() - started
    if sweep["status"] != "succeeded":
        raise RuntimeError(f"sweep {sweep_id} ended {sweep['status']}: {sweep}")
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    best = sweep["best_trial"]
    return SweepRun(
        best_validation=best["value"],
        best_test=best["test_metrics"]["accuracy"],
        epochs=sum(epochs_trained(client, t["job_id"]) for t in trials),
        trainer_cpu_seconds=trainer_cpu(stack) - cpu_before,
        seconds=seconds,
        trials=len(trials),
        best_params=best["params"],
    )


def sweep_body(
    way: dict, seed: int, trials: int, parallel: int, benchmark: Benchmark = DIGITS_M
) -> dict:
    return {
        "name": f"bench-{way['sampler']}-{way['pruner']['name']}-{seed}",
        "job": benchmark.job(),
        "parameters": SPACE,
        "objective": {"metric": "accuracy", "split": "validation"},
        "sampler": {"name": way["sampler"], "seed": seed},
        "pruner": way["pruner"],
        "max_trials": trials,
        "max_parallel_trials": parallel,
    }


def in_process(seed: int, trials: int, benchmark: Benchmark = DIGITS_M) -> tuple[float, float]:
    """The study in this process, over the plain loop: its best validation accuracy and its
    seconds. Each ask's sampler is the service's, so the trials are the same."""
    spec = SweepSpec.model_validate(sweep_body(UNPRUNED, seed, trials, 1, benchmark))
    study = optuna.create_study(direction="maximize")
    started = time.monotonic()
    for number in range(trials):
        study.sampler = spec.make_sampler(number)  # as the service builds it for each ask
        trial = study.ask(spec.distributions())
        case = Case(
            name=f"trial {number}",
            architecture="cnn",
            train=benchmark.train,
            epochs=benchmark.epochs,
            batch_size=trial.params["hyperparameters.batch_size"],
            params={"hidden": trial.params["model.params.hidden"]},
            learning_rate=trial.params["hyperparameters.learning_rate"],
        )
        study.tell(trial, plain_fit(case).validation_accuracy)
    return study.best_value, time.monotonic() - started


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.mean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


# 3. Against the hand-picked defaults

OPTIMISER = {
    "hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "hyperparameters.batch_size": {"type": "categorical", "choices": [8, 16, 32, 64]},
    "hyperparameters.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "hyperparameters.lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]},
}


@dataclass(frozen=True)
class Defaults:
    """A row of docs/RESULTS.md: its hand-picked spec for a seed."""

    row: str
    spec: Callable[[int], dict]


DEFAULTS = [
    Defaults(
        "CNN from scratch, 5% of the digits labels (section 1)",
        lambda seed: transfer.few_label_specs(seed)["scratch"],
    ),
    Defaults(
        "MiniLM linear probe, 2% of the BBC News labels (section 4)",
        lambda seed: hf_text.specs(seed, 0.02)["MiniLM, linear probe"],
    ),
]


@dataclass(frozen=True)
class AgainstDefaults:
    defaults_test: float
    epochs: int  # of the defaults' job, and of each trial at most
    sweep: SweepRun


def defaults_sweep(spec: dict, seed: int, trials: int) -> dict:
    """A sweep over `spec`'s optimiser settings, its epochs kept; three rungs of successive
    halving below the last epoch."""
    epochs = spec["hyperparameters"]["epochs"]
    return {
        "name": f"bench-defaults-{seed}",
        "job": spec,
        "parameters": OPTIMISER,
        "objective": {"metric": "accuracy", "split": "validation"},
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": {
            "name": "successive_halving",
            "min_resource": max(1, epochs // 9),
            "reduction_factor": 3,
        },
        "max_trials": trials,
        "max_parallel_trials": 2,
    }


def against_defaults(seeds: list[int], trials: int) -> dict[str, list[AgainstDefaults]]:
    results: dict[str, list[AgainstDefaults]] = {d.row: [] for d in DEFAULTS}
    env = {"OMP_NUM_THREADS": "1"}  # two trainers at once, one core each
    with postgres_redis_stack(concurrency=2, extra_env=env) as stack, stack.client() as client:
        client.timeout = httpx.Timeout(60)
        runner = transfer.Runner(client)
        for defaults in DEFAULTS:
            for seed in seeds:
                spec = defaults.spec(seed)
                (job,) = runner.wait([runner.submit(spec)])
                run = run_sweep(client, stack, defaults_sweep(spec, seed, trials))
                epochs = spec["hyperparameters"]["epochs"]
                result = AgainstDefaults(job["metrics"]["test_accuracy"], epochs, run)
                results[defaults.row].append(result)
                print(f"# {defaults.row}, seed {seed}: {result}", flush=True)
    return results


def setting(item: tuple[str, object]) -> str:
    path, value = item
    name = path.rsplit(".", 1)[-1]
    return f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"


def defaults_section(
    results: dict[str, list[AgainstDefaults]], seeds: list[int], trials: int, minutes: float
) -> str:
    lines = [
        "## 5. A sweep against the hand-picked defaults",
        "",
        f"Written by `bench/sweep.py --measure defaults` on {datetime.now():%Y-%m-%d}: each row's "
        f"hand-picked spec, and a sweep of {trials} trials over its learning rate, batch size, "
        "weight decay and schedule (tpe, successive halving with three rungs below the last "
        "epoch, the epochs kept) with the same job seed, so the same labelled subset; seeds "
        f"{seeds}, mean ± sample standard deviation, in %. The best trial is chosen on the "
        "validation split (the whole of it: the few labels are the training split's), its "
        "test accuracy reported. Through the HTTP API, on Postgres and Redis; the run took "
        f"{minutes:.0f} min on 2 CPU cores. Reproduce: "
        "`.venv/bin/python -m bench.sweep --measure defaults`.",
        "",
        "| row | defaults: test | sweep: best validation | sweep: test | per seed | gain | "
        "epochs trained: sweep (defaults) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, runs in results.items():
        defaults = [r.defaults_test for r in runs]
        tests = [r.sweep.best_test for r in runs]
        gain = 100 * (statistics.mean(tests) - statistics.mean(defaults))
        lines.append(
            f"| {row} | {mean_sd(defaults, 100)} | "
            f"{mean_sd([r.sweep.best_validation for r in runs], 100)} | {mean_sd(tests, 100)} | "
            f"{', '.join(f'{100 * t:.1f}' for t in tests)} | {gain:+.1f} | "
            f"{mean_sd([r.sweep.epochs for r in runs], digits=0)} ({runs[0].epochs}) |"
        )
    lines += ["", "The best trials' settings:", ""]
    for row, runs in results.items():
        for seed, run in zip(seeds, runs, strict=True):
            params = ", ".join(map(setting, run.sweep.best_params.items()))
            lines.append(f"- {row}, seed {seed}: {params}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--measure",
        nargs="+",
        choices=["early-stopping", "service-cost", "defaults"],
        default=["early-stopping", "service-cost"],
        help="defaults: written to docs/RESULTS.md as well",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--trials", type=int, help="per sweep (default: 30 for early-stopping, 12 for defaults)"
    )
    parser.add_argument("--overhead-trials", type=int, default=4)
    parser.add_argument("--overhead-rounds", type=int, default=3)
    parser.add_argument(
        "--pruners",
        nargs="+",
        choices=["hyperband", "successive_halving"],
        default=["hyperband", "successive_halving"],
        help="a pruned sweep per seed with each (tpe; min_resource 1, reduction_factor 3)",
    )
    args = parser.parse_args()
    servers.start_unless_named()
    print(f"# bench.sweep: {machine()}")
    seeds = list(range(args.seeds))
    rows = []
    if "early-stopping" in args.measure:
        rows += early_stopping(seeds, args.trials or 30, args.pruners)
    if "service-cost" in args.measure:
        rows.append(service_cost(args.overhead_trials, args.overhead_rounds))
    if rows:
        print(table(rows))
    if "defaults" in args.measure:
        started = time.monotonic()
        results = against_defaults(seeds, args.trials or 12)
        minutes = (time.monotonic() - started) / 60
        text = defaults_section(results, seeds, args.trials or 12, minutes)
        print(text)
        write_section(Path("docs/RESULTS.md"), "bench.sweep", text)


def early_stopping(seeds: list[int], trials: int, pruners: list[str]) -> list[Row]:
    """The unpruned sweep of each seed, and a pruned one per pruner with the same seed."""
    runs: dict[str, list[SweepRun]] = {name: [] for name in ["none", *pruners]}
    env = {"OMP_NUM_THREADS": "1"}  # two trainers at once, one core each
    with postgres_redis_stack(concurrency=2, extra_env=env) as stack, stack.client() as client:
        client.timeout = httpx.Timeout(60)
        for seed in seeds:
            for name in runs:
                way = UNPRUNED if name == "none" else pruned_way(name)
                run = run_sweep(client, stack, sweep_body(way, seed, trials, 2))
                runs[name].append(run)
                print(f"# seed {seed}, pruner {name}: {run}", flush=True)
    unpruned = runs.pop("none")
    ways = f"{trials} trials, 2 at a time, {len(seeds)} seeds"
    return [
        row
        for pruner, pruned in runs.items()
        for row in pruned_rows(f"tpe + {pruner} ({ways})", pruned, unpruned)
    ]


def pruned_way(pruner: str) -> dict:
    return {**PRUNED, "pruner": {**PRUNED["pruner"], "name": pruner}}


def pruned_rows(way: str, pruned: list[SweepRun], unpruned: list[SweepRun]) -> list[Row]:
    def share(figure: Callable[[SweepRun], float]) -> float:
        return statistics.mean(map(figure, pruned)) / statistics.mean(map(figure, unpruned))

    test_gap = statistics.mean(r.best_test for r in pruned) - statistics.mean(
        r.best_test for r in unpruned
    )
    epoch_share = share(lambda r: r.epochs)
    return [
        Row(
            f"{way}: best trial's validation accuracy, % (baseline: random, no pruner)",
            mean_sd([r.best_validation for r in pruned], 100),
            mean_sd([r.best_validation for r in unpruned], 100),
        ),
        Row(
            f"{way}: best trial's test accuracy, % (held out)",
            mean_sd([r.best_test for r in pruned], 100),
            mean_sd([r.best_test for r in unpruned], 100),
            f"{100 * test_gap:+.1f} points",
            ">= -1 point",
            test_gap >= -0.01,
        ),
        Row(
            f"{way}: epochs trained by all trials",
            mean_sd([r.epochs for r in pruned], digits=0),
            mean_sd([r.epochs for r in unpruned], digits=0),
            f"{epoch_share:.2f}",
            "<= 0.40",
            epoch_share <= 0.40,
        ),
        Row(
            f"{way}: trainer CPU seconds",
            mean_sd([r.trainer_cpu_seconds for r in pruned], digits=0),
            mean_sd([r.trainer_cpu_seconds for r in unpruned], digits=0),
            f"{share(lambda r: r.trainer_cpu_seconds):.2f}",
        ),
    ]


def fresh_in_process(
    seed: int, trials: int, benchmark: Benchmark = DIGITS_M
) -> tuple[float, float]:
    """`in_process` in a new interpreter with one torch thread, as each trainer
    runs: a process that has trained before runs faster than a fresh one (bench.overhead)."""
    spawn = multiprocessing.get_context("spawn")
    one_thread = {"initializer": torch.set_num_threads, "initargs": (1,)}
    with ProcessPoolExecutor(1, mp_context=spawn, **one_thread) as pool:
        return pool.submit(in_process, seed, trials, benchmark).result()


def service_cost(trials: int, rounds: int) -> Row:
    """Rounds of the two sides one after the other, in turn first, and the median of the
    rounds' ratios: this machine's speed drifts by several percent within minutes, so sides
    far apart in time meet different machines (docs/PERFORMANCE.md, Training overhead)."""
    rounds_seconds = []  # (tunery, in-process) per round
    env = {"OMP_NUM_THREADS": "1"}
    with postgres_redis_stack(concurrency=1, extra_env=env) as stack, stack.client() as client:
        client.timeout = httpx.Timeout(60)
        sides: list[Callable[[], float]] = [
            lambda: run_sweep(client, stack, sweep_body(UNPRUNED, 0, trials, 1)).seconds,
            lambda: fresh_in_process(0, trials)[1],
        ]
        for number in range(rounds):
            order = [0, 1] if number % 2 == 0 else [1, 0]
            seconds = {side: sides[side]() for side in order}
            rounds_seconds.append((seconds[0], seconds[1]))
            print(f"# round {number}: tunery {seconds[0]:.0f} s, in-process {seconds[1]:.0f} s")
    ratios = [in_process_s / tunery_s for tunery_s, in_process_s in rounds_seconds]
    ratio = statistics.median(ratios)
    return Row(
        f"trials per hour, {trials} random trials one at a time (tunery; baseline: the same "
        f"study in one process over a plain loop), median of {rounds} rounds (each round)",
        f"{statistics.median(trials * 3600 / t for t, _ in rounds_seconds):.0f}",
        f"{statistics.median(trials * 3600 / i for _, i in rounds_seconds):.0f}",
        f"{ratio:.2f} ({', '.join(f'{r:.2f}' for r in ratios)})",
        ">= 0.90",
        ratio >= 0.90,
    )


if __name__ == "__main__":
    main()
