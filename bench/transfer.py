"""Does domain adaptation transfer? Runs docs/RESULTS.md's adaptation experiments through the
HTTP API (each row is jobs submitted over HTTP, metrics read back) and rewrites its section.

    .venv/bin/python -m bench.transfer                 # starts an embedded service of its own
    .venv/bin/python -m bench.transfer --url URL       # or uses a running one

On every pair of domains (labelled source -> unlabelled target), every adapt method with its
documented defaults, the same for every pair, and training on the target's labels as the upper
bound; over several seeds (mean ± standard deviation). Nothing is chosen on the target's labels:
each job keeps its last epoch and the method's default hyperparameters.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.jobs import Runner, cell, checks_and_specs, header, hp, per_seed, values
from bench.results import write_section
from bench.service import service

# BatchNorm, so that each domain's batches are normalised with their own statistics; every
# row, the baseline and the upper bound included, trains this same network.
CNN_BN = {"architecture": "cnn", "params": {"batch_norm": True}}
PAIRS = {
    "digits-rgb -> digits-m": ("builtin:digits-rgb", "builtin:digits-m"),
    "digits-rgb -> digits-scan": ("builtin:digits-rgb", "builtin:digits-scan"),
}
METHODS = ("source_only", "dann", "coral", "mmd", "mcc", "self_training")
ORACLE = "target labels (upper bound)"
# Each method's figure on a digit benchmark as published, beside ours (source-only -> method,
# training on the target's labels); DSN = Bousmalis et al. 2016, Table 2, MNIST -> MNIST-M.
PAPERS = {
    "dann": "Ganin et al. 2016, MNIST -> MNIST-M: 52.3 -> 76.7 (target labels 96.0)",
    "coral": "DSN's re-run of CORAL, MNIST -> MNIST-M: 56.6 -> 57.7 (target labels 98.7)",
    "mmd": "DSN's re-run of MMD (Long et al. 2015), MNIST -> MNIST-M: 56.6 -> 76.9",
    "mcc": "Jin et al. 2020 report no digit pair (Office-31, Office-Home, VisDA-2017)",
    "self_training": "AdaMatch (Berthelot et al. 2022) reports DigitFive and DomainNet, "
    "no single MNIST -> MNIST-M figure",
}


def adaptation_specs(seed: int, source: str, target: str) -> dict[str, dict]:
    adapt_hp = hp(seed, epochs=20, lr_schedule="cosine")
    data = {"source": source, "target": target}
    adapt = {"kind": "adapt", "model": CNN_BN, "data": data, "hyperparameters": adapt_hp}
    specs = {m: adapt | {"method": {"name": m}} for m in METHODS}
    specs[ORACLE] = {
        "kind": "finetune", "model": CNN_BN, "data": {"train": target},
        "hyperparameters": adapt_hp,
    }  # fmt: skip
    return specs


def run_experiments(runner: Runner, seeds: list[int]) -> dict:
    specs = {
        (pair, row, seed): spec
        for pair, domains in PAIRS.items()
        for seed in seeds
        for row, spec in adaptation_specs(seed, *domains).items()
    }
    return {"jobs": runner.run(specs), "specs": specs}


def pair_table(jobs: dict, pair: str) -> tuple[list[str], dict[str, float]]:
    """A pair's table, and each adapt method's share of its gap."""
    lines = [
        "| method | target test accuracy | per seed | without AdaBN | source test accuracy | "
        "gain | share of the gap |",
        "|---|---|---|---|---|---|---|",
    ]
    baseline = statistics.mean(values(jobs, pair, "source_only", "test_accuracy"))
    oracle = statistics.mean(values(jobs, pair, ORACLE, "test_accuracy"))
    shares = {}
    for row in (*METHODS, ORACLE):
        accuracy = values(jobs, pair, row, "test_accuracy")
        gain = statistics.mean(accuracy) - baseline
        share = gain / (oracle - baseline)
        without, source = (
            (cell(values(jobs, pair, row, "test_accuracy_without_adabn")),
             cell(values(jobs, pair, row, "source_test_accuracy")))
            if row != ORACLE else ("—", "—")
        )  # fmt: skip
        lines.append(
            f"| {row} | {cell(accuracy)} | {per_seed(accuracy)} | {without} | {source} | "
            f"{100 * gain:+.1f} | {100 * share:.0f}% |"
        )
        if row not in ("source_only", ORACLE):
            shares[row] = share
    return lines, shares


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    lines = header("transfer", seeds, elapsed_s, "Domain adaptation results")
    lines += [
        "Every method normalises as the baseline does: each domain's batches with their own "
        "statistics in training, the running statistics the source's, then re-estimated on the "
        "unlabelled target training split once trained (AdaBN, the default). A gain is over "
        "that fair `source_only`; the share of the gap is of `source_only` -> target labels. "
        "Without AdaBN: the same jobs' target accuracy with the source's statistics.",
        "",
        "Model selection uses no target label: every method runs with its documented default "
        "hyperparameters (the same on every pair) and the job keeps its last epoch; the "
        "target's test split is only reported.",
        "",
    ]
    checks = []
    all_shares = {}
    for number, pair in enumerate(PAIRS, 1):
        table, shares = pair_table(jobs, pair)
        lines += [f"## {number}. {pair}", "", *table, ""]
        all_shares[pair] = shares
    first = next(iter(PAIRS))
    best = max(all_shares[first], key=all_shares[first].get)
    checks.append((f"on {first}, an adapt method closes >= 50% of the source_only -> target "
                   f"labels gap (best: {best}, {100 * all_shares[first][best]:.0f}%)",
                   all_shares[first][best] >= 0.5))  # fmt: skip
    lines += ["## The literature, beside ours", ""]
    lines += [f"- `{method}`: {figure}" for method, figure in PAPERS.items()]
    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines) + "\n", checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running tunery; default: start an embedded one")
    parser.add_argument("--key", default=os.environ.get("TUNERY_API_KEY"), help="its API key")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = parser.parse_args()
    started = time.monotonic()
    with service(args.url, args.key, concurrency=os.cpu_count() or 1) as client:
        results = run_experiments(Runner(client), args.seeds)
    text, checks = report(results, args.seeds, time.monotonic() - started)
    write_section(args.out, "bench.transfer", text)
    print(text)
    print("\n".join(f"{'PASS' if ok else 'FAIL'} {name}" for name, ok in checks))


if __name__ == "__main__":
    main()
