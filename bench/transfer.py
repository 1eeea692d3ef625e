"""Does domain adaptation transfer? Runs docs/RESULTS.md's adaptation experiments through the
HTTP API (each row is jobs submitted over HTTP, metrics read back) and rewrites its section.

    .venv/bin/python -m bench.transfer                 # starts an embedded service of its own
    .venv/bin/python -m bench.transfer --url URL       # or uses a running one

On every pair of domains (labelled source -> unlabelled target), every adapt method with its
documented defaults, the same for every pair, and training on the target's labels as the upper
bound; over several seeds (mean ± standard deviation). Nothing is chosen on the target's labels:
each job keeps its last epoch and the method's default hyperparameters.
"""

import statistics

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp, per_seed, values

# BatchNorm, so that each domain's batches are normalised with their own statistics; every
# row, the baseline and the upper bound included, trains this same network.
CNN_BN = {"architecture": "cnn", "params": {"batch_norm": True}}
PAIRS = {
    "digits-rgb -> digits-m": ("builtin:digits-rgb", "builtin:digits-m"),
    "digits-rgb -> digits-scan": ("builtin:digits-rgb", "builtin:digits-scan"),
}
METHODS = ("source_only", "dann", "coral", "mmd", "mcc", "self_training")
SOURCE_FREE = "source_only -> shot"  # SHOT adapts the source_only model, without the source
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
    "shot": "Liang et al. 2020 (source-free), SVHN -> MNIST: 67.1 -> 98.9 (target labels 99.4)",
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
    """Every method and the upper bound, then `shot` from each seed's `source_only` model."""
    specs = {
        (pair, row, seed): spec
        for pair, domains in PAIRS.items()
        for seed in seeds
        for row, spec in adaptation_specs(seed, *domains).items()
    }
    jobs = runner.run(specs)
    source_free = {
        (pair, SOURCE_FREE, seed): {
            "kind": "adapt",
            "method": {"name": "shot"},
            "base_model_id": jobs[(pair, "source_only", seed)]["result_model_id"],
            "data": {"target": target},
            "hyperparameters": hp(seed, epochs=20, lr_schedule="cosine"),
        }
        for pair, (_source, target) in PAIRS.items()
        for seed in seeds
    }
    jobs |= runner.run(source_free)
    return {"jobs": jobs, "specs": specs | source_free}


def pair_table(jobs: dict, pair: str) -> tuple[list[str], dict[str, float]]:
    """A pair's table, and each adapt method's share of its gap."""
    lines = [
        "| method | target test accuracy | per seed | without AdaBN | source test accuracy | "
        "DEV risk | gain | share of the gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline = statistics.mean(values(jobs, pair, "source_only", "test_accuracy"))
    oracle = statistics.mean(values(jobs, pair, ORACLE, "test_accuracy"))
    shares = {}
    for row in (*METHODS, SOURCE_FREE, ORACLE):
        accuracy = values(jobs, pair, row, "test_accuracy")
        gain = statistics.mean(accuracy) - baseline
        share = gain / (oracle - baseline)
        without, source, risk = (
            (cell(values(jobs, pair, row, "test_accuracy_without_adabn")),
             cell(values(jobs, pair, row, "source_test_accuracy")),
             cell(values(jobs, pair, row, "dev_risk"), scale=1.0, digits=3))
            if row in METHODS else ("—", "—", "—")
        )  # fmt: skip
        lines.append(
            f"| {row} | {cell(accuracy)} | {per_seed(accuracy)} | {without} | {source} | "
            f"{risk} | {100 * gain:+.1f} | {100 * share:.0f}% |"
        )
        if row not in ("source_only", ORACLE):
            shares[row] = share
    lines.append("")
    lines.append(chosen_without_labels(jobs, pair))
    return lines, shares


def chosen_without_labels(jobs: dict, pair: str) -> str:
    """Which method a user would pick, per seed, by DEV's risk (lowest) and by source
    validation accuracy (highest), and the target accuracy each pick reaches."""

    def pick(metric: str, best) -> str:
        picks = []
        for seed in sorted({s for (p, _r, s) in jobs if p == pair}):
            rows = {r: job["metrics"] for (p, r, s), job in jobs.items()
                    if (p, s) == (pair, seed) and r in METHODS}  # fmt: skip
            row = best(rows, key=lambda r: rows[r][metric])
            picks.append(f"{row} ({100 * rows[row]['test_accuracy']:.1f})")
        return ", ".join(picks)

    return (
        f"Chosen without target labels, per seed (its target test accuracy): by DEV's risk "
        f"{pick('dev_risk', min)}; by source validation accuracy "
        f"{pick('validation_accuracy', max)}."
    )


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    lines = header("transfer", seeds, elapsed_s, "Domain adaptation results")
    lines += [
        "Every method normalises as the baseline does: each domain's batches with their own "
        "statistics in training, the running statistics the source's, then re-estimated on the "
        "unlabelled target training split once trained (AdaBN, the default). A gain is over "
        "that fair `source_only`; the share of the gap is of `source_only` -> target labels. "
        "Without AdaBN: the same jobs' target accuracy with the source's statistics. "
        f"`{SOURCE_FREE}`: SHOT adapts each seed's `source_only` model to the target without "
        "reading the source (source-free).",
        "",
        "Model selection uses no target label: every method runs with its documented default "
        "hyperparameters (the same on every pair) and the job keeps its last epoch; the "
        "target's test split is only reported. DEV risk: deep embedded validation (You et al., "
        "2019), each job's target risk estimated from the source validation split weighted by "
        "a domain classifier (lower is better), the label-free way to choose a method on a "
        "new pair; below each table, what it and source validation accuracy would choose.",
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
    bench_main(
        __doc__.splitlines()[0],
        "bench.transfer",
        lambda client, seeds: run_experiments(Runner(client), seeds),
        report,
    )


if __name__ == "__main__":
    main()
