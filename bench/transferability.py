"""Does the transferability score rank candidate bases as fine-tuning them does? Scores every
candidate through `POST /v1/datasets/{id}/rank-models` (LogME, before any training), fine-tunes
each on the target with the same recipe (jobs over HTTP), and compares the two orders by
Kendall's tau; rewrites its section of docs/RESULTS.md.

    .venv/bin/python -m bench.transferability               # starts an embedded service
    .venv/bin/python -m bench.transferability --url URL     # or uses a running one

Images (the check): the target is 5% of the digits labels (60 examples), the seed CNN.
Six candidate bases of that one architecture (so that every one reads 1x28x28 images and has
64 features): a fresh CNN (training from scratch; in the ranking as a `models` entry), the CNN
pretrained by `autoencoder` and by `contrastive` on the unlabelled digits training split,
`contrastive` on a shifted domain (digits-scan's training images in grey, unlabelled), and two
of an unrelated domain, 28x28 grey patches of scikit-learn's two sample photographs:
`autoencoder` on them, and `supervised` on a 4-class task (which photograph, which half). No
base ever reads a digit label. The bases are trained once (seed 0); each seed draws another 5%
subset, on which every candidate is scored and then fine-tuned.

Text (reported, not checked: three candidates): 5% of BBC News labels; MiniLM (the bundled
all-MiniLM-L6-v2, imported), tunery's transformer pretrained by `causal_lm` on the unlabelled
training texts, and that transformer fresh. Each architecture fine-tunes with bench.hf_text's
recipe for it (MiniLM: learning rate 2e-4, 10 epochs; transformer: 1e-3, 15 epochs).
"""

import io
import json
import statistics
import time
from datetime import datetime

import httpx
import numpy as np
from scipy.stats import kendalltau

from bench.jobs import Runner, bench_main, cell, header, hp, per_seed
from bench.pretraining import TRANSFORMER

CNN = {"architecture": "cnn"}
FEW_DIGITS = {"dataset": "builtin:digits", "fraction": 0.05}
FEW_TEXTS = {"dataset": "builtin:bbc-news", "fraction": 0.05}
SCRATCH = "scratch (fresh weights)"
MINILM = "MiniLM (all-MiniLM-L6-v2)"
TAU_TARGET = 0.6


def photo_patches(count: int = 1600) -> bytes:
    """An unrelated domain for the digits CNN: 28x28 grey patches of scikit-learn's two sample
    photographs (a temple, a flower) on the digits' 0-16 scale, labelled by photograph and half
    (upper, lower): 4 classes. Deterministic (seed 0); an npz."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = [image.mean(axis=2) / 255.0 * 16.0 for image in load_sample_images().images]
    x = np.empty((count, 28, 28), dtype=np.float32)
    y = np.empty(count, dtype=np.int64)
    for i in range(count):
        photo, half = i % 2, (i // 2) % 2
        rows = photos[photo].shape[0] // 2
        top = half * rows + rng.integers(rows - 28)
        left = rng.integers(photos[photo].shape[1] - 28)
        x[i] = photos[photo][top : top + 28, left : left + 28]
        y[i] = 2 * photo + half
    out = io.BytesIO()
    np.savez(out, x=x, y=y)
    return out.getvalue()


def scan_digits() -> bytes:
    """A shifted domain: builtin:digits-scan's training images (smaller, off-centre, blurred,
    noisy digits), grey as one channel, without labels. An npz."""
    from trainer.data import load_dataset

    train = load_dataset("builtin:digits-scan").splits["train"].x
    out = io.BytesIO()
    np.savez(out, x=train[:, 0].numpy())
    return out.getvalue()


def upload(client: httpx.Client, name: str, content: bytes, task: str) -> str:
    response = client.post(
        "/v1/datasets", files={"file": (f"{name}.npz", content)}, data={"name": name, "task": task}
    )
    response.raise_for_status()
    return response.json()["id"]


def base_specs(photos: str, scans: str) -> dict[tuple[str, str, int], dict]:
    """The jobs that make the pretrained candidates, keyed (target, row, seed 0)."""

    def cnn_job(kind: str, method: str, train: str, epochs: int) -> dict:
        return {"kind": kind, "model": CNN, "method": {"name": method},
                "data": {"train": train}, "hyperparameters": hp(0, epochs=epochs)}  # fmt: skip

    causal_lm = {
        "kind": "pretrain", "model": TRANSFORMER, "method": {"name": "causal_lm"},
        "data": {"train": "builtin:bbc-news"},
        "hyperparameters": hp(0, epochs=3, batch_size=32, warmup_steps=50, lr_schedule="cosine"),
    }  # fmt: skip
    rows = {
        ("digits", "autoencoder, digits"): cnn_job("pretrain", "autoencoder", "builtin:digits", 15),
        ("digits", "contrastive, digits"): cnn_job("pretrain", "contrastive", "builtin:digits", 15),
        ("digits", "contrastive, digits-scan (shifted)"): cnn_job(
            "pretrain", "contrastive", scans, 15
        ),
        ("digits", "autoencoder, photo patches (unrelated)"): cnn_job(
            "pretrain", "autoencoder", photos, 15
        ),
        ("digits", "supervised, photo patches (unrelated)"): cnn_job(
            "finetune", "supervised", photos, 10
        ),
        ("text", "transformer, causal_lm on BBC News"): causal_lm,
    }
    return {(target, row, 0): spec for (target, row), spec in rows.items()}


# Per target: the dataset scored and fine-tuned on, and the fresh architecture.
TARGETS = {
    "digits": ("builtin:digits", FEW_DIGITS, CNN),
    "text": ("builtin:bbc-news", FEW_TEXTS, TRANSFORMER),
}


def recipe(target: str, row: str, seed: int) -> dict:
    """The fine-tuning hyperparameters: one for every image candidate; on text, each
    architecture's from bench.hf_text."""
    if target == "digits":
        return hp(seed, epochs=40, batch_size=32)
    if row == MINILM:
        return hp(seed, epochs=10, batch_size=16, lr_schedule="cosine", learning_rate=2e-4)
    return hp(seed, epochs=15, batch_size=16, lr_schedule="cosine")


def rank(client: httpx.Client, target: str, bases: dict[str, str | None], seed: int) -> dict:
    """One ranking call: each candidate's score on the seed's subset, and the call's seconds."""
    dataset, data, fresh = TARGETS[target]
    body = {
        "model_ids": [model_id for model_id in bases.values() if model_id],
        "models": [fresh],
        "fraction": data["fraction"],
        "seed": seed,
    }
    started = time.monotonic()
    response = client.post(f"/v1/datasets/{dataset}/rank-models", json=body)
    response.raise_for_status()
    seconds = time.monotonic() - started
    row_of = {model_id: row for row, model_id in bases.items()}
    scores = {row_of[entry["model_id"]]: entry["score"] for entry in response.json()["ranking"]}
    return {"scores": scores, "seconds": seconds, "examples": response.json()["examples"]}


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    runner = Runner(client)
    photos = upload(client, "photo-patches", photo_patches(), "classification")
    scans = upload(client, "digits-scan-grey", scan_digits(), "pretraining")
    made = runner.run(base_specs(photos, scans))
    minilm = client.post("/v1/models/import", data={"hf_model": "all-minilm-l6-v2"})
    minilm.raise_for_status()
    bases = {
        target: {SCRATCH: None} | {row: job["result_model_id"] for (t, row, _), job in
                                   made.items() if t == target}
        for target in TARGETS
    }  # fmt: skip
    bases["text"][MINILM] = minilm.json()["id"]
    rankings = {(t, seed): rank(client, t, bases[t], seed) for t in TARGETS for seed in seeds}
    specs = {}
    for target, (_dataset, data, fresh) in TARGETS.items():
        for row, model_id in bases[target].items():
            for seed in seeds:
                start = {"base_model_id": model_id} if model_id else {"model": fresh}
                specs[(target, row, seed)] = {
                    "kind": "finetune", **start, "data": {"train": data},
                    "hyperparameters": recipe(target, row, seed),
                }  # fmt: skip
    return {"bases": bases, "rankings": rankings, "jobs": runner.run(specs), "specs": specs,
            "base_specs": base_specs("<photo patches>", "<digits-scan, grey>")}  # fmt: skip


def job_seconds(job: dict) -> float:
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def target_table(results: dict, target: str, seeds: list[int]) -> tuple[list[str], float]:
    """The target's table (candidates best-scored first) and Kendall's tau between the mean
    score and the mean fine-tuned test accuracy."""
    rows = list(results["bases"][target])
    score = {r: [results["rankings"][(target, s)]["scores"][r] for s in seeds] for r in rows}
    accuracy = {
        r: [results["jobs"][(target, r, s)]["metrics"]["test_accuracy"] for s in seeds]
        for r in rows
    }
    mean_score = {r: statistics.mean(v) for r, v in score.items()}
    mean_accuracy = {r: statistics.mean(v) for r, v in accuracy.items()}
    by_score = sorted(rows, key=lambda r: -mean_score[r])
    by_accuracy = sorted(rows, key=lambda r: -mean_accuracy[r])
    lines = [
        "| candidate base | LogME (mean) | per seed | fine-tuned test accuracy | per seed | "
        "rank by score | rank by accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in by_score:
        lines.append(
            f"| {r} | {mean_score[r]:.3f} | {', '.join(f'{v:.3f}' for v in score[r])} | "
            f"{cell(accuracy[r])} | {per_seed(accuracy[r])} | {by_score.index(r) + 1} | "
            f"{by_accuracy.index(r) + 1} |"
        )
    tau = kendalltau([mean_score[r] for r in rows], [mean_accuracy[r] for r in rows]).statistic
    per_seed_tau = [
        kendalltau([score[r][i] for r in rows], [accuracy[r][i] for r in rows]).statistic
        for i in range(len(seeds))
    ]
    ranking_s = [results["rankings"][(target, s)]["seconds"] for s in seeds]
    tuning_s = [job_seconds(results["jobs"][(target, r, s)]) for r in rows for s in seeds]
    examples = [results["rankings"][(target, s)]["examples"] for s in seeds]
    lines += [
        "",
        f"Kendall's tau between the mean score and the mean accuracy: **{tau:.2f}** over "
        f"{len(rows)} candidates; within each seed (that seed's subset, scores and accuracies): "
        f"{', '.join(f'{t:.2f}' for t in per_seed_tau)}. Scored on {examples} labelled "
        f"examples (per seed); one `rank-models` call for all {len(rows)} candidates took "
        f"{statistics.mean(ranking_s):.1f} s on average, fine-tuning them "
        f"{sum(tuning_s) / len(seeds):.0f} s of job time per seed.",
    ]
    return lines, tau


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    lines = header("transferability", seeds, elapsed_s, "Transferability before training")
    lines += [
        "Each candidate base is scored by `POST /v1/datasets/{id}/rank-models` (LogME of its "
        "backbone's features on the labelled examples a fine-tuning job of that seed trains on; "
        "no training), then fine-tuned on those examples; test accuracy is on the target's test "
        "split. See the bench's docstring for how each base was made; no base reads a digit "
        "label. The fresh candidate is scored with weights drawn by the seed, and fine-tuned "
        "from the job's own.",
        "",
        "## 1. Images: 5% of the digits labels, the seed CNN",
        "",
    ]
    table, tau = target_table(results, "digits", seeds)
    lines += [*table, ""]
    checks = [(f"digits: Kendall's tau >= {TAU_TARGET} ({tau:.2f})", tau >= TAU_TARGET)]
    lines += ["## 2. Text: 5% of the BBC News labels (reported, not checked)", ""]
    table, _tau = target_table(results, "text", seeds)
    lines += [*table, ""]
    lines += ["## Checks", "", *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]]
    lines += ["", "## The specs", "", "Bases (seed 0):", ""]
    for (target, row, _seed), spec in results["base_specs"].items():
        lines.append(f"- {target} / {row}: `{json.dumps(spec)}`")
    lines += ["", f"Fine-tuning, seed {seeds[0]} (`base_model_id` the row's base):", ""]
    for (target, row, seed), spec in results["specs"].items():
        if seed == seeds[0]:
            shown = {k: v for k, v in spec.items() if k != "base_model_id"}
            lines.append(f"- {target} / {row}: `{json.dumps(shown)}`")
    return "\n".join(lines) + "\n", checks


def main() -> None:
    bench_main(__doc__.splitlines()[0], "bench.transferability", run_experiments, report)


if __name__ == "__main__":
    main()
