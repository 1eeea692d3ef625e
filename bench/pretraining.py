"""Does pretraining transfer? Runs docs/RESULTS.md's pretraining experiments through the HTTP
API (each row is jobs submitted over HTTP, metrics read back) and rewrites its section.

    .venv/bin/python -m bench.pretraining              # starts an embedded service of its own
    .venv/bin/python -m bench.pretraining --url URL    # or uses a running one

Two experiments, each over several seeds (mean ± standard deviation):
1. few labels: 5% of the digits labels, from scratch vs fine-tuned from a self-supervised
   pretraining (autoencoder, contrastive) on the whole unlabelled training split;
2. text: causal-LM pretraining of a small transformer on BBC News (perplexity before and
   after), then topic classification with 20% of the labels, pretrained vs from scratch.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.jobs import Runner, cell, checks_and_specs, header, hp, per_seed, values
from bench.results import write_section
from bench.service import service

CNN = {"architecture": "cnn"}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 64, "layers": 2, "heads": 4, "max_length": 64, "vocab_size": 2000},
}
FEW_DIGITS = {"dataset": "builtin:digits", "fraction": 0.05}
FEW_TEXTS = {"dataset": "builtin:bbc-news", "fraction": 0.2}


def few_label_specs(seed: int) -> dict[str, dict]:
    finetune = {"kind": "finetune", "data": {"train": FEW_DIGITS},
                "hyperparameters": hp(seed, epochs=40, batch_size=32)}  # fmt: skip
    pretrain = {"kind": "pretrain", "model": CNN, "data": {"train": "builtin:digits"},
                "hyperparameters": hp(seed, epochs=15)}  # fmt: skip
    return {
        "scratch": finetune | {"model": CNN},
        "autoencoder": pretrain | {"method": {"name": "autoencoder"}},
        "contrastive": pretrain | {"method": {"name": "contrastive"}},
        "finetune": finetune,  # from each pretrained model: base_model_id is added
    }


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
    first = {}
    for seed in seeds:
        few, text = few_label_specs(seed), text_specs(seed)
        for row in ("scratch", "autoencoder", "contrastive"):
            first[("few", row, seed)] = few[row]
        for row in ("causal_lm", "scratch"):
            first[("text", row, seed)] = text[row]
    jobs = runner.run(first)

    second = {}
    for seed in seeds:
        for method in ("autoencoder", "contrastive"):
            base = jobs[("few", method, seed)]["result_model_id"]
            spec = few_label_specs(seed)["finetune"] | {"base_model_id": base}
            second[("few", f"{method} -> finetune", seed)] = spec
        base = jobs[("text", "causal_lm", seed)]["result_model_id"]
        spec = text_specs(seed)["finetune"] | {"base_model_id": base}
        second[("text", "causal_lm -> finetune", seed)] = spec
    jobs |= runner.run(second)
    return {"jobs": jobs, "specs": first | second}


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    lines = header("pretraining", seeds, elapsed_s, "Pretraining results")
    checks = []

    lines += [
        "## 1. Few labels: 5% of the digits labels",
        "",
        "| model | test accuracy | per seed | gain over scratch |",
        "|---|---|---|---|",
    ]
    scratch = values(jobs, "few", "scratch", "test_accuracy")
    for row in ("scratch", "autoencoder -> finetune", "contrastive -> finetune"):
        accuracy = values(jobs, "few", row, "test_accuracy")
        gain = (statistics.mean(accuracy) - statistics.mean(scratch)) * 100
        lines.append(f"| {row} | {cell(accuracy)} | {per_seed(accuracy)} | {gain:+.1f} |")
        if row != "scratch":
            checks.append((f"{row} gains >= 3 points over scratch ({gain:+.1f})", gain >= 3))
    lines.append("")

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
    write_section(args.out, "bench.pretraining", text)
    print(text)
    print("\n".join(f"{'PASS' if ok else 'FAIL'} {name}" for name, ok in checks))


if __name__ == "__main__":
    main()
