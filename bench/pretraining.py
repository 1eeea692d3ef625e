"""Does pretraining transfer? Runs docs/RESULTS.md's pretraining experiments through the HTTP
API (each row is jobs submitted over HTTP, metrics read back) and rewrites its section.

    .venv/bin/python -m bench.pretraining              # starts an embedded service of its own
    .venv/bin/python -m bench.pretraining --url URL    # or uses a running one

Two experiments, each over several seeds (mean ± standard deviation):
1. few labels: 5% and 20% of the digits labels, from scratch vs fine-tuned from a
   self-supervised pretraining (autoencoder, contrastive) on the whole unlabelled training
   split; at the benchmark's hyperparameters (15 pretraining epochs, 40 fine-tuning epochs at
   batch 32), and at the defaults a new user gets (no hyperparameters: 10 epochs at batch 64,
   learning rate 1e-3, for the pretraining and for the fine-tunes);
2. text: causal-LM pretraining of a small transformer on BBC News (perplexity before and
   after), then topic classification with 20% of the labels, pretrained vs from scratch.
"""

import statistics

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp, per_seed, values

CNN = {"architecture": "cnn"}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 64, "layers": 2, "heads": 4, "max_length": 64, "vocab_size": 2000},
}
FEW_TEXTS = {"dataset": "builtin:bbc-news", "fraction": 0.2}
FRACTIONS = (0.05, 0.2)
PRETEXTS = ("autoencoder", "contrastive")
# experiment -> (pretraining, fine-tuning) hyperparameters besides the seed
SETTINGS = {
    "few": ({"epochs": 15}, {"epochs": 40, "batch_size": 32}),
    "few, defaults": ({}, {}),
}
# What the benchmark's fine-tunes from each pretraining must gain over scratch with 5% labels.
TARGETS = {"autoencoder": 3.0, "contrastive": 8.0}


def finetune_row(method: str, fraction: float) -> str:
    return (
        f"{method} -> finetune, {fraction:.0%}"
        if method != "scratch"
        else f"scratch, {fraction:.0%}"
    )


def few_label_specs(seed: int, experiment: str) -> dict[str, dict]:
    """The pretraining jobs by method, the fine-tunes from scratch by row, and `finetune` by
    fraction: the fine-tune of a pretrained model (its base_model_id is added)."""
    pretrain_hp, finetune_hp = SETTINGS[experiment]
    pretrain = {"kind": "pretrain", "model": CNN, "data": {"train": "builtin:digits"},
                "hyperparameters": hp(seed, **pretrain_hp)}  # fmt: skip
    specs = {m: pretrain | {"method": {"name": m}} for m in PRETEXTS}
    for fraction in FRACTIONS:
        finetune = {"kind": "finetune",
                    "data": {"train": {"dataset": "builtin:digits", "fraction": fraction}},
                    "hyperparameters": hp(seed, **finetune_hp)}  # fmt: skip
        specs[finetune_row("scratch", fraction)] = finetune | {"model": CNN}
        specs[f"finetune, {fraction:.0%}"] = finetune
    return specs


def text_specs(seed: int) -> dict[str, dict]:
    text_hp = hp(seed, epochs=15, batch_size=16, lr_schedule="cosine")
    finetune = {"kind": "finetune", "data": {"train": FEW_TEXTS}, "hyperparameters": text_hp}
    return {
        "causal_lm": {
            "kind": "pretrain", "model": TRANSFORMER, "method": {"name": "causal_lm"},
            "data": {"train": "builtin:bbc-news"},
            "hyperparameters": hp(
                seed, epochs=3, batch_size=32, warmup_steps=50, lr_schedule="cosine"
            ),
        },
        "scratch": finetune | {"model": TRANSFORMER},
        "finetune": finetune,
    }  # fmt: skip


def run_experiments(runner: Runner, seeds: list[int]) -> dict:
    """The pretraining and from-scratch jobs first, then the fine-tunes of each pretrain."""
    first, second = {}, {}
    for seed in seeds:
        for experiment in SETTINGS:
            for row, spec in few_label_specs(seed, experiment).items():
                if not row.startswith("finetune"):
                    first[(experiment, row, seed)] = spec
        text = text_specs(seed)
        for row in ("causal_lm", "scratch"):
            first[("text", row, seed)] = text[row]
    jobs = runner.run(first)

    for seed in seeds:
        for experiment in SETTINGS:
            few = few_label_specs(seed, experiment)
            for method in PRETEXTS:
                base = {"base_model_id": jobs[(experiment, method, seed)]["result_model_id"]}
                for fraction in FRACTIONS:
                    spec = few[f"finetune, {fraction:.0%}"] | base
                    second[(experiment, finetune_row(method, fraction), seed)] = spec
        base = jobs[("text", "causal_lm", seed)]["result_model_id"]
        spec = text_specs(seed)["finetune"] | {"base_model_id": base}
        second[("text", "causal_lm -> finetune", seed)] = spec
    jobs |= runner.run(second)
    return {"jobs": jobs, "specs": first | second}


def few_label_table(jobs: dict, experiment: str) -> tuple[list[str], list[tuple[str, bool]]]:
    lines = ["| model | labels | test accuracy | per seed | gain over scratch |",
             "|---|---|---|---|---|"]  # fmt: skip
    checks = []
    for fraction in FRACTIONS:
        scratch = values(jobs, experiment, finetune_row("scratch", fraction), "test_accuracy")
        for method in ("scratch", *PRETEXTS):
            row = finetune_row(method, fraction)
            accuracy = values(jobs, experiment, row, "test_accuracy")
            gain = (statistics.mean(accuracy) - statistics.mean(scratch)) * 100
            cells = [row.split(",")[0], f"{fraction:.0%}", cell(accuracy), per_seed(accuracy)]
            lines.append(f"| {' | '.join(cells)} | {gain:+.1f} |")
            if method == "scratch":
                continue
            where = f"{method} -> finetune, {fraction:.0%} of the labels ({experiment})"
            checks.append((f"{where} beats scratch ({gain:+.1f})", gain > 0))
            if experiment == "few" and fraction == 0.05:
                target = TARGETS[method]
                checks.append((f"{where} gains >= {target:g} points ({gain:+.1f})", gain >= target))
    return lines, checks


def pretraining_losses(jobs: dict) -> list[str]:
    lines = ["| pretraining | hyperparameters | optimizer steps | validation loss per seed |",
             "|---|---|---|---|"]  # fmt: skip
    for experiment, (pretrain_hp, _) in SETTINGS.items():
        for method in PRETEXTS:
            runs = [job["metrics"] for (e, r, _s), job in sorted(jobs.items())
                    if (e, r) == (experiment, method)]  # fmt: skip
            losses = ", ".join(
                f"{m['initial_validation_loss']:.3f} -> {m['validation_loss']:.3f}" for m in runs
            )
            shown = ", ".join(f"{k} {v}" for k, v in pretrain_hp.items()) or "defaults"
            lines.append(f"| {method} | {shown} | {int(runs[0]['steps'])} | {losses} |")
    return lines


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    lines = header("pretraining", seeds, elapsed_s, "Pretraining results")
    checks = []

    lines += ["## 1. Few labels: 5% and 20% of the digits labels", "",
              "At the benchmark's hyperparameters: 15 pretraining epochs (batch 64), then 40 "
              "fine-tuning epochs at batch 32.", ""]  # fmt: skip
    table, found = few_label_table(jobs, "few")
    lines += [*table, ""]
    checks += found
    lines += ["At the defaults, as a new user who sets no hyperparameters gets them: 10 epochs "
              "at batch 64 and learning rate 1e-3, for the pretraining and for every fine-tune "
              "(at 5% of the labels, one step an epoch).", ""]  # fmt: skip
    table, found = few_label_table(jobs, "few, defaults")
    lines += [*table, "", *pretraining_losses(jobs), ""]
    checks += found

    lines += ["## 2. Text: causal-LM pretraining on BBC News, then topic classification", "",
              "| | per seed |", "|---|---|"]  # fmt: skip
    before = values(jobs, "text", "causal_lm", "initial_val_perplexity")
    after = values(jobs, "text", "causal_lm", "val_perplexity")
    ratio = statistics.mean(b / a for b, a in zip(before, after, strict=True))
    lines.append(f"| validation perplexity, untrained | {', '.join(f'{v:.0f}' for v in before)} |")
    lines.append(f"| validation perplexity, pretrained | {', '.join(f'{v:.1f}' for v in after)} |")
    lines.append(f"| reduction | {ratio:.1f}x (mean) |")
    checks.append((f"causal_lm lowers validation perplexity >= 2x ({ratio:.1f}x)", ratio >= 2))
    lines += ["", "| model (20% of the labels) | test accuracy | per seed |", "|---|---|---|"]
    text_scratch = values(jobs, "text", "scratch", "test_accuracy")
    tuned = values(jobs, "text", "causal_lm -> finetune", "test_accuracy")
    lines.append(f"| transformer from scratch | {cell(text_scratch)} | {per_seed(text_scratch)} |")
    lines.append(f"| causal_lm -> finetune | {cell(tuned)} | {per_seed(tuned)} |")
    gain = (statistics.mean(tuned) - statistics.mean(text_scratch)) * 100
    checks.append((f"the pretrained transformer beats scratch on text ({gain:+.1f})", gain > 0))

    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines) + "\n", checks


def main() -> None:
    bench_main(
        __doc__.splitlines()[0],
        "bench.pretraining",
        lambda client, seeds: run_experiments(Runner(client), seeds),
        report,
    )


if __name__ == "__main__":
    main()
