"""Datasets larger than memory: peak memory against dataset size, registering and training.

For each size, synthetic parquet shards of texts (random words of a fixed vocabulary, 8 MiB of
text a shard) go to a moto S3 server; the service (Postgres, Redis, the API and a worker)
registers them by reference (`POST /v1/datasets/references`: every row checked as a stream)
and trains `causal_lm` on them for one epoch, streamed. Each figure:

- the API's peak resident memory (VmHWM, reset just before the request) while it registers;
- the trainer's peak resident memory (VmHWM, read from /proc while it runs: the last reading
  before it exits, which misses at most its last moments);
- the examples the epoch saw (its steps' batches: one process sees every training row) against
  the rows stored and the training rows the record counts.

The baseline, in the same run: the same texts as one `.jsonl` file, read whole by the reader a
small upload goes through (`trainer.readers.read_dataset`, what every upload did before) and
checked as a stream (`trainer.streaming.scan`), each in a fresh interpreter, its VmHWM.

No memory cap is set: RLIMIT_AS counts the virtual memory torch and the thread pools reserve
(gigabytes never touched), so a cap low enough to matter stops the processes at import. The
peak resident memory is what the claim is about: flat as the dataset grows.

Run: `.venv/bin/python -m bench.streaming` (sizes 8, 32 and 128 MiB of text; about 6
minutes on 2 cores); `--sizes-mib 16,64` for others.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.timing import Row, machine, postgres_redis_stack, service_processes, table
from tests.servers import S3_CREDENTIALS, moto_s3
from trainer.training import batch_sizes

SHARD_TEXT_BYTES = 8 * 1024**2
WORDS_PER_TEXT = 40
BATCH_SIZE = 256
MODEL = {
    "architecture": "transformer",
    "params": {"vocab_size": 512, "max_length": 32, "d_model": 32, "layers": 1, "heads": 2},
}
BUCKET = "bench-corpora"


def _vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(4096)])


def texts(rng: np.random.Generator, vocabulary: np.ndarray, count: int) -> list[str]:
    words = vocabulary[rng.integers(len(vocabulary), size=(count, WORDS_PER_TEXT))]
    return [" ".join(row) for row in words]


@dataclass(frozen=True)
class Corpus:
    text_bytes: int
    rows: int
    shards: list[Path]  # parquet
    jsonl: Path  # the same texts in one file, for the baseline


def make_corpus(directory: Path, text_bytes: int, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    per_text = len(" ".join(texts(rng, vocabulary, 1)[0]))
    per_shard = max(1, SHARD_TEXT_BYTES // per_text)
    shards, rows, written = [], 0, 0
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "corpus.jsonl", "w") as whole:
        while written < text_bytes:
            count = min(per_shard, max(1, (text_bytes - written) // per_text))
            batch = texts(rng, vocabulary, count)
            path = directory / f"part-{len(shards):05d}.parquet"
            pq.write_table(pa.table({"text": batch}), path, row_group_size=16_384)
            whole.writelines(json.dumps({"text": t}) + "\n" for t in batch)
            shards.append(path)
            rows += count
            written += sum(map(len, batch))
    return Corpus(written, rows, shards, directory / "corpus.jsonl")


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class TrainerPeak:
    """Polls the stack's trainer processes' VmHWM while a job runs; the highest seen."""

    def __init__(self, stack) -> None:
        self.stack, self.peak, self._done = stack, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.is_set():
            for pid, process in service_processes(self.stack).items():
                if process.role == "trainer":
                    self.peak = max(self.peak, _vm_hwm(pid) or 0)
            time.sleep(0.2)

    def __enter__(self) -> "TrainerPeak":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()


@dataclass(frozen=True)
class Measured:
    text_mib: float
    stored_mib: float
    rows: int
    train_rows: int
    seen: int
    api_peak: int  # bytes
    api_growth: int
    trainer_peak: int
    register_s: float
    train_s: float
    whole_read_peak: int | None  # the baseline; None when it did not finish
    stream_check_peak: int


READ_WHOLE = "from trainer.readers import read_dataset; import sys; read_dataset(sys.argv[1], 'jsonl', False)"  # noqa: E501
CHECK_STREAMED = (
    "import sys; from pathlib import Path; from trainer.streaming import scan, Shard; "
    "scan([Shard(url=sys.argv[1], format='jsonl', size_bytes=Path(sys.argv[1]).stat().st_size)], False)"  # noqa: E501
)


def peak_of(code: str, path: Path, timeout_s: float) -> int | None:
    """The VmHWM of a fresh interpreter running `code` on `path`, read as it ends (not its
    rusage: ru_maxrss keeps the forking parent's peak across exec); None if it did not finish
    in time or failed."""
    command = [
        sys.executable,
        "-c",
        f"{code}\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])",
        str(path),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    return int(done.stdout.split()[-1]) * 1024 if done.returncode == 0 else None


def measure(stack, client, s3, corpus: Corpus, prefix: str, baseline_timeout_s: float) -> Measured:
    for shard in corpus.shards:
        s3.upload_file(str(shard), BUCKET, f"{prefix}/{shard.name}")
    api_pid = stack.processes[0].pid
    Path(f"/proc/{api_pid}/clear_refs").write_text("5")  # the peak starts again from now
    before = _vm_hwm(api_pid)
    started = time.monotonic()
    register = {"name": prefix, "task": "pretraining", "uri": f"s3://{BUCKET}/{prefix}/"}
    response = client.post("/v1/datasets/references", json=register, timeout=3600)
    response.raise_for_status()
    register_s = time.monotonic() - started
    api_peak = _vm_hwm(api_pid)
    dataset = response.json()
    spec = {
        "kind": "pretrain",
        "model": MODEL,
        "data": {"train": dataset["id"]},
        "method": {"name": "causal_lm"},
        "hyperparameters": {"epochs": 1, "batch_size": BATCH_SIZE},
        "resources": {"max_runtime_seconds": 6 * 3600},
    }
    started = time.monotonic()
    with TrainerPeak(stack) as trainer:
        job_id = client.post("/v1/jobs", json=spec).raise_for_status().json()["id"]
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}\n{stack.logs()}")
    train_rows = dataset["splits"]["train"]
    steps = int(job["metrics"]["steps"])
    return Measured(
        text_mib=corpus.text_bytes / 1024**2,
        stored_mib=dataset["size_bytes"] / 1024**2,
        rows=dataset["num_examples"],
        train_rows=train_rows,
        seen=sum(batch_sizes(train_rows, BATCH_SIZE)[:steps]),
        api_peak=api_peak,
        api_growth=api_peak - before,
        trainer_peak=trainer.peak,
        register_s=register_s,
        train_s=time.monotonic() - started,
        whole_read_peak=peak_of(READ_WHOLE, corpus.jsonl, baseline_timeout_s),
        stream_check_peak=peak_of(CHECK_STREAMED, corpus.jsonl, baseline_timeout_s),
    )


def run(sizes_mib: list[float], work: Path, baseline_timeout_s: float = 1800) -> list[Measured]:
    import boto3

    found = []
    with moto_s3(work / "moto.log") as endpoint:
        os.environ.update(S3_CREDENTIALS)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        env = {
            **S3_CREDENTIALS,
            "TUNERY_S3_ENDPOINT_URL": endpoint,
            "TUNERY_DATASET_SOURCES": f"s3://{BUCKET}/",
        }
        with postgres_redis_stack(extra_env=env) as stack, stack.client() as client:
            for i, size in enumerate(sizes_mib):
                corpus = make_corpus(work / f"corpus-{i}", int(size * 1024**2), seed=i)
                found.append(measure(stack, client, s3, corpus, f"c{i}", baseline_timeout_s))
                for shard in corpus.shards:  # moto keeps them; the disk need not
                    shard.unlink()
    return found


def _mib(value: int | None) -> str:
    return "did not finish" if value is None else f"{value / 1024**2:.0f} MiB"


def report(found: list[Measured]) -> str:
    rows = []
    for m in found:
        size = f"{m.text_mib:.0f} MiB of text ({m.stored_mib:.0f} MiB stored), {m.rows} rows"
        rows += [
            Row(f"{size}: API peak while registering (growth)",
                f"{_mib(m.api_peak)} (+{_mib(m.api_growth)}), {m.register_s:.0f} s"),
            Row(f"{size}: trainer peak, one epoch", f"{_mib(m.trainer_peak)}, {m.train_s:.0f} s"),
            Row(f"{size}: examples seen / training rows / rows stored",
                f"{m.seen} / {m.train_rows} / {m.rows}", target="seen = training rows",
                passed=m.seen == m.train_rows),
            Row(f"{size}: checking one .jsonl of it, peak", _mib(m.stream_check_peak),
                baseline=f"{_mib(m.whole_read_peak)} (read whole)"),
        ]  # fmt: skip
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="8,32,128")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes_mib.split(",")]
    print(f"# bench.streaming, {machine()}")
    with tempfile.TemporaryDirectory(prefix="tunery-streaming-") as work:
        found = run(sizes, Path(work))
    print(report(found))


if __name__ == "__main__":
    main()
