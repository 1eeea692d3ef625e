"""Does transfer learning transfer? Runs the experiments of docs/RESULTS.md through the HTTP
API (each row is jobs submitted over HTTP, metrics read back) and rewrites that file.

    .venv/bin/python -m bench.transfer                 # starts an embedded service of its own
    .venv/bin/python -m bench.transfer --url URL       # or uses a running one

Three experiments, each over several seeds (mean ± standard deviation):
1. few labels: 5% of the digits labels, from scratch vs fine-tuned from a self-supervised
   pretraining (autoencoder, contrastive) on the whole unlabelled training split;
2. domain adaptation: labelled grey digits -> unlabelled coloured digits-m, every adapt
   method, and training on the target's labels as the upper bound;
3. text: causal-LM pretraining of a small transformer on BBC News (perplexity before and
   after), then topic classification with 20% of the labels, pretrained vs from scratch.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from bench.results import write_section
from bench.service import service

CNN = {"architecture": "cnn"}
CNN_BN = {"architecture": "cnn", "params": {"batch_norm": True}}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 64, "layers": 2, "heads": 4, "max_length": 64, "vocab_size": 2000},
}
FEW_DIGITS = {"dataset": "builtin:digits", "fraction": 0.05}
FEW_TEXTS = {"dataset": "builtin:bbc-news", "fraction": 0.2}
ORACLE = "target labels (upper bound)"


def hp(seed: int, **overrides) -> dict:
    return {"seed": seed, **overrides}


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


def adaptation_specs(seed: int) -> dict[str, dict]:
    data = {"source": "builtin:digits-rgb", "target": "builtin:digits-m"}
    adapt_hp = hp(seed, epochs=20, lr_schedule="cosine")
    # BatchNorm, so that each domain's batches are normalised with their own statistics;
    # every row, the baseline and the upper bound included, trains this same network.
    adapt = {"kind": "adapt", "model": CNN_BN, "data": data, "hyperparameters": adapt_hp}
    methods = ("source_only", "dann", "coral", "mmd", "mcc", "self_training")
    specs = {m: adapt | {"method": {"name": m}} for m in methods}
    specs[ORACLE] = {
        "kind": "finetune", "model": CNN_BN, "data": {"train": "builtin:digits-m"},
        "hyperparameters": adapt_hp,
    }  # fmt: skip
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


class Runner:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def submit(self, spec: dict) -> str:
        response = self.client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, job_ids: list[str]) -> list[dict]:
        pending, done = set(job_ids), {}
        while pending:
            for job_id in list(pending):
                job = self.client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                    done[job_id] = job
                    pending.discard(job_id)
            time.sleep(1)
        return [done[job_id] for job_id in job_ids]


def run_experiments(runner: Runner, seeds: list[int]) -> dict:
    """Submits every job of a phase at once (the worker runs them as it can), then waits."""
    first = {}
    for seed in seeds:
        few, adapt, text = few_label_specs(seed), adaptation_specs(seed), text_specs(seed)
        for row in ("scratch", "autoencoder", "contrastive"):
            first[("few", row, seed)] = few[row]
        for row, spec in adapt.items():
            first[("adapt", row, seed)] = spec
        for row in ("causal_lm", "scratch"):
            first[("text", row, seed)] = text[row]
    jobs = dict(zip(first, runner.wait([runner.submit(s) for s in first.values()]), strict=True))

    second = {}
    for seed in seeds:
        for method in ("autoencoder", "contrastive"):
            base = jobs[("few", method, seed)]["result_model_id"]
            spec = few_label_specs(seed)["finetune"] | {"base_model_id": base}
            second[("few", f"{method} -> finetune", seed)] = spec
        base = jobs[("text", "causal_lm", seed)]["result_model_id"]
        spec = text_specs(seed)["finetune"] | {"base_model_id": base}
        second[("text", "causal_lm -> finetune", seed)] = spec
    jobs |= dict(zip(second, runner.wait([runner.submit(s) for s in second.values()]), strict=True))
    return {"jobs": jobs, "specs": first | second}


def _values(jobs: dict, experiment: str, row: str, metric: str) -> list[float]:
    return [
        job["metrics"][metric]
        for (e, r, _s), job in sorted(jobs.items())
        if (e, r) == (experiment, row)
    ]


def _cell(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def _seeds(values: list[float]) -> str:
    return ", ".join(f"{v * 100:.1f}" for v in values)


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    lines = ["# Transfer results", "",
             f"Written by `bench/transfer.py` on {time.strftime('%Y-%m-%d')}: every number below "
             f"comes from jobs submitted to tunery's HTTP API, over seeds {seeds} "
             f"(mean ± sample standard deviation, in %; per-seed values after). "
             f"The whole run took {elapsed_s / 60:.1f} min on {os.cpu_count()} CPU cores.",
             "Reproduce: `.venv/bin/python -m bench.transfer` (about that long; it starts its own "
             "embedded service).", ""]  # fmt: skip
    checks = []

    lines += [
        "## 1. Few labels: 5% of the digits labels",
        "",
        "| model | test accuracy | per seed | gain over scratch |",
        "|---|---|---|---|",
    ]
    scratch = _values(jobs, "few", "scratch", "test_accuracy")
    for row in ("scratch", "autoencoder -> finetune", "contrastive -> finetune"):
        values = _values(jobs, "few", row, "test_accuracy")
        gain = (statistics.mean(values) - statistics.mean(scratch)) * 100
        lines.append(f"| {row} | {_cell(values)} | {_seeds(values)} | {gain:+.1f} |")
        if row != "scratch":
            checks.append((f"{row} gains >= 3 points over scratch ({gain:+.1f})", gain >= 3))
    lines.append("")

    lines += [
        "## 2. Domain adaptation: digits-rgb (labelled) -> digits-m (unlabelled)",
        "",
        "Every method normalises as the baseline does: each domain's batches with their own "
        "statistics in training, the running statistics the source's, then re-estimated on the "
        "unlabelled target training split once trained (AdaBN, the default). A gain is over "
        "that fair `source_only`; the share of the gap is of `source_only` -> target labels. "
        "Without AdaBN: the same jobs' target accuracy with the source's statistics.",
        "",
        "| method | target test accuracy | per seed | without AdaBN | source test accuracy | "
        "gain | share of the gap |",
        "|---|---|---|---|---|---|---|",
    ]
    baseline = statistics.mean(_values(jobs, "adapt", "source_only", "test_accuracy"))
    oracle = statistics.mean(_values(jobs, "adapt", ORACLE, "test_accuracy"))
    shares = {}
    for row in adaptation_specs(seeds[0]):
        values = _values(jobs, "adapt", row, "test_accuracy")
        gain = statistics.mean(values) - baseline
        share = gain / (oracle - baseline)
        without, source = (
            (_cell(_values(jobs, "adapt", row, "test_accuracy_without_adabn")),
             _cell(_values(jobs, "adapt", row, "source_test_accuracy")))
            if row != ORACLE else ("—", "—")
        )  # fmt: skip
        lines.append(
            f"| {row} | {_cell(values)} | {_seeds(values)} | {without} | {source} | "
            f"{100 * gain:+.1f} | {100 * share:.0f}% |"
        )
        if row not in ("source_only", ORACLE):
            shares[row] = share
    best = max(shares, key=shares.get)
    checks.append((f"an adapt method closes >= 50% of the source_only -> target labels gap "
                   f"(best: {best}, {100 * shares[best]:.0f}%)", shares[best] >= 0.5))  # fmt: skip
    lines.append("")

    lines += ["## 3. Text: causal-LM pretraining on BBC News, then topic classification", "",
              "| | per seed |", "|---|---|"]  # fmt: skip
    before = _values(jobs, "text", "causal_lm", "initial_val_perplexity")
    after = _values(jobs, "text", "causal_lm", "val_perplexity")
    ratio = statistics.mean(b / a for b, a in zip(before, after, strict=True))
    lines.append(f"| validation perplexity, untrained | {', '.join(f'{v:.0f}' for v in before)} |")
    lines.append(f"| validation perplexity, pretrained | {', '.join(f'{v:.1f}' for v in after)} |")
    lines.append(f"| reduction | {ratio:.1f}x (mean) |")
    checks.append((f"causal_lm lowers validation perplexity >= 2x ({ratio:.1f}x)", ratio >= 2))
    lines += ["", "| model (20% of the labels) | test accuracy | per seed |", "|---|---|---|"]
    text_scratch = _values(jobs, "text", "scratch", "test_accuracy")
    tuned = _values(jobs, "text", "causal_lm -> finetune", "test_accuracy")
    lines.append(f"| transformer from scratch | {_cell(text_scratch)} | {_seeds(text_scratch)} |")
    lines.append(f"| causal_lm -> finetune | {_cell(tuned)} | {_seeds(tuned)} |")
    gain = (statistics.mean(tuned) - statistics.mean(text_scratch)) * 100
    checks.append((f"the pretrained transformer beats scratch on text ({gain:+.1f})", gain > 0))

    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    lines += ["", "## The specs, for seed 0", ""]
    for (experiment, row, seed), spec in sorted(results["specs"].items()):
        if seed == seeds[0]:
            shown = {k: v for k, v in spec.items() if k != "base_model_id"}
            if "base_model_id" in spec:
                shown["base_model_id"] = f"<the {row.split(' ->')[0]} model of this seed>"
            lines += [f"`{experiment}` / {row}:", "```json", json.dumps(shown), "```"]
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
