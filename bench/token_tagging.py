"""Token tagging on `builtin:bbc-entities` through the HTTP API: MiniLM (the bundled
`all-minilm-l6-v2`, pretrained elsewhere) fine-tuned whole and with LoRA, against a transformer
from scratch and the same transformer after `causal_lm` pretraining on the training split's
sentences (no tags). Rewrites its section of docs/RESULTS.md (or `--out`).

    .venv/bin/python -m bench.token_tagging

Every model trains on the same 20% of the training split's sentences (the job's own
`fraction`, drawn by the seed), validates on the whole validation split and is scored on the
whole test split (sentences of articles no job trained on: the split is by article). Each job
keeps its best epoch by validation entity F1; nothing is chosen on test. The tags are the
rule's (`trainer/tagged_news.py`); a model is scored on how well it learns that rule from a
fifth of the sentences.
"""

import httpx

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp, per_seed, values

DATASET = "builtin:bbc-entities"
FEW = 0.2
MAX_LENGTH = 64  # tokens: every sentence has at most 40 words
MINILM = {"architecture": "hf_encoder", "params": {"max_length": MAX_LENGTH}}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"max_length": MAX_LENGTH, "vocab_size": 4000, "d_model": 128},
}
FINETUNE = {"epochs": 6, "batch_size": 32, "early_stopping_patience": 2}
ROWS = {
    "MiniLM, full fine-tuning": (MINILM, {}, 1e-4),
    # LoRA's head starts fitted to the frozen features (LP-FT): from a random head, at 1e-3
    # and at 1e-4, every seed learnt only to tag every word O (validation entity F1 0.0): the
    # adapters barely move the features, and a random head learns slowly at LoRA's rates.
    "MiniLM, LoRA rank 8": (MINILM, {"lora_rank": 8, "head_init": "probe"}, 1e-3),
    "transformer from scratch": (TRANSFORMER, {}, 1e-3),
}
PRETRAINED = "transformer after causal_lm pretraining"


def finetune(seed: int, model: dict | None, params: dict, learning_rate: float) -> dict:
    spec = {
        "kind": "finetune",
        "method": {"name": "supervised", "params": params},
        "data": {"train": {"dataset": DATASET, "fraction": FEW}},
        "hyperparameters": hp(seed, learning_rate=learning_rate, **FINETUNE),
    }
    return spec | ({"model": model} if model else {})


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    runner = Runner(client)
    first = {("tagging", row, seed): finetune(seed, model, params, lr)
             for seed in seeds for row, (model, params, lr) in ROWS.items()}  # fmt: skip
    first |= {
        ("tagging", "causal_lm pretraining", seed): {
            "kind": "pretrain",
            "model": TRANSFORMER,
            "method": {"name": "causal_lm"},
            "data": {"train": DATASET},
            "hyperparameters": hp(seed, epochs=3, batch_size=32, learning_rate=1e-3),
        }
        for seed in seeds
    }
    jobs = runner.run(first)
    second = {
        ("tagging", f"causal_lm pretraining -> {PRETRAINED}", seed): {
            **finetune(seed, None, {}, 1e-3),
            "base_model_id": jobs[("tagging", "causal_lm pretraining", seed)]["result_model_id"],
        }
        for seed in seeds
    }
    jobs |= runner.run(second)
    return {"jobs": jobs, "specs": first | second}


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    rows = [*ROWS, f"causal_lm pretraining -> {PRETRAINED}"]

    def scores(row: str, metric: str) -> list[float]:
        return values(jobs, "tagging", row, f"test_{metric}")

    lines = header("token_tagging", seeds, elapsed_s, "Token tagging: BBC News entities")
    lines += [
        f"Test entity F1 (seqeval, entity level) and token accuracy, training on {FEW:.0%} of "
        "the training split's sentences; the test split's sentences come from other articles.",
        "",
        "| model | test entity F1 | test token accuracy | entity F1 per seed |",
        "|---|---|---|---|",
    ]
    for row in rows:
        f1 = scores(row, "entity_f1")
        accuracy = scores(row, "token_accuracy")
        name = row.split(" -> ")[-1]
        lines.append(f"| {name} | {cell(f1)} | {cell(accuracy)} | {per_seed(f1)} |")
    mean = {row: sum(scores(row, "entity_f1")) / len(seeds) for row in rows}
    scratch = mean["transformer from scratch"]
    checks = [
        (f"MiniLM fine-tuned beats the transformer from scratch (entity F1 "
         f"{mean['MiniLM, full fine-tuning']:.3f} against {scratch:.3f})",
         mean["MiniLM, full fine-tuning"] > scratch),
        (f"LoRA is within 5 points of full fine-tuning ({mean['MiniLM, LoRA rank 8']:.3f} "
         f"against {mean['MiniLM, full fine-tuning']:.3f})",
         mean["MiniLM, LoRA rank 8"] > mean["MiniLM, full fine-tuning"] - 0.05),
        (f"causal_lm pretraining beats scratch ({mean[rows[-1]]:.3f} against {scratch:.3f})",
         mean[rows[-1]] > scratch),
    ]  # fmt: skip
    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines), checks


if __name__ == "__main__":
    bench_main(__doc__.splitlines()[0], "bench.token_tagging", run_experiments, report)
