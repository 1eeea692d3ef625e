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

The API and the worker run under a memory cap: a memory cgroup each (`bench.memory_cap`), the
API started again in one (`--cap-mib`, 1 GiB), a worker in the other (`--worker-cap-mib`,
1.5 GiB: the Celery worker, its pool process, its zygote and the trainer it forks, all born in
it; about 950 MiB before any data, since the zygote and the trainer hold torch each, so a
1 GiB group would leave the trainer under 100 MiB). Past the cap
the kernel reclaims page cache, then kills a process (counted: an OOM kill fails the job and
the run). Each group's peak resident memory (its processes' anonymous and mapped pages, each
counted once however many processes share it; polled every 0.2 s, not the kernel's peak,
which counts page cache up to the cap) is reported beside the processes' VmHWM. Where no
cgroup can be made the run goes on without a cap and says why. RLIMIT_AS is no substitute:
it counts the virtual memory torch and the thread pools reserve (gigabytes never touched), so
a cap low enough to matter stops the processes at import.

Sizes past `--train-up-to-mib` are registered (every row checked) but not trained: one epoch
on 2 cores reads 0.2 (busy) to 0.7 (idle) MiB of text a second.

Run: `.venv/bin/python -m bench.streaming` (32 and 256 MiB registered and trained, 1 GiB
registered; 24 minutes on 2 busy cores, about half that idle); `--sizes-mib 16,64` for others.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.memory_cap import CapUnavailable, MemoryCap
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


class Peak:
    """Polls `read()` (bytes) every 0.2 s while a step runs; the highest seen."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read, self.peak, self._done = read, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.2)

    def __enter__(self) -> "Peak":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()


def trainers_hwm(stack) -> int:
    """The highest VmHWM of the stack's trainer processes now."""
    peaks = [
        _vm_hwm(pid) or 0 for pid, p in service_processes(stack).items() if p.role == "trainer"
    ]
    return max(peaks, default=0)


@dataclass(frozen=True)
class Measured:
    text_mib: float
    stored_mib: float
    rows: int
    train_rows: int
    seen: int | None  # None: registered, not trained
    api_peak: int  # bytes
    api_growth: int
    trainer_peak: int | None
    register_s: float
    train_s: float | None
    whole_read_peak: int | None  # the baseline; None when it did not finish
    stream_check_peak: int | None
    # The resident memory of the API's cgroup while it registered, and of the worker's (worker,
    # zygote, trainer) while it trained, polled; None: no cap.
    api_group_peak: int | None
    worker_group_peak: int | None


@dataclass(frozen=True)
class Caps:
    """The memory cgroups the API and the worker run in."""

    api: MemoryCap
    worker: MemoryCap

    @classmethod
    def around(cls, stack, api_bytes: int, worker_bytes: int) -> "Caps":
        """The stack's API and worker started again, each born in a group of its own (a process
        moved in would be charged only for what it allocated from then on)."""
        caps = cls(MemoryCap.create("tunery-api", api_bytes),
                   MemoryCap.create("tunery-worker", worker_bytes))  # fmt: skip
        with caps.api.holding_this_process():
            stack.restart_api()
        with caps.worker.holding_this_process():
            worker = stack.start_worker()
        first = stack.processes[1]
        os.killpg(first.pid, signal.SIGKILL)  # its zygote and trainers die with it
        first.wait()
        stack.processes[1:] = [worker]  # the worker `service_processes` follows
        return caps

    def oom_kills(self) -> int:
        return self.api.oom_kills() + self.worker.oom_kills()

    def remove(self) -> None:
        self.api.remove()
        self.worker.remove()


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


def measure(
    stack, client, s3, corpus: Corpus, prefix: str, caps: Caps | None, train: bool,
    baseline_timeout_s: float,
) -> Measured:  # fmt: skip
    for shard in corpus.shards:
        s3.upload_file(str(shard), BUCKET, f"{prefix}/{shard.name}")
    api_pid = stack.processes[0].pid
    Path(f"/proc/{api_pid}/clear_refs").write_text("5")  # the peak starts again from now
    before = _vm_hwm(api_pid)
    started = time.monotonic()
    register = {"name": prefix, "task": "pretraining", "uri": f"s3://{BUCKET}/{prefix}/"}
    with Peak(caps.api.resident if caps is not None else lambda: 0) as api_group:
        response = client.post("/v1/datasets/references", json=register, timeout=3600)
    response.raise_for_status()
    register_s = time.monotonic() - started
    api_peak = _vm_hwm(api_pid)
    api_group_peak = api_group.peak if caps is not None else None
    dataset = response.json()
    train_rows = dataset["splits"]["train"]
    seen = trainer_peak = train_s = worker_group_peak = None
    if train:
        seen, trainer_peak, train_s, worker_group_peak = train_one_epoch(
            stack, client, dataset, caps
        )
    whole_jsonl = corpus.text_bytes <= BASELINE_UP_TO
    return Measured(
        text_mib=corpus.text_bytes / 1024**2,
        stored_mib=dataset["size_bytes"] / 1024**2,
        rows=dataset["num_examples"],
        train_rows=train_rows,
        seen=seen,
        api_peak=api_peak,
        api_growth=api_peak - before,
        trainer_peak=trainer_peak,
        register_s=register_s,
        train_s=train_s,
        whole_read_peak=peak_of(READ_WHOLE, corpus.jsonl, baseline_timeout_s)
        if whole_jsonl
        else None,
        stream_check_peak=peak_of(CHECK_STREAMED, corpus.jsonl, baseline_timeout_s)
        if whole_jsonl
        else None,
        api_group_peak=api_group_peak,
        worker_group_peak=worker_group_peak,
    )


def train_one_epoch(stack, client, dataset: dict, caps: Caps | None):
    """One epoch of `causal_lm` on the dataset: the examples seen, the trainer's VmHWM, the
    time, and the worker's cgroup's peak resident memory."""
    spec = {
        "kind": "pretrain",
        "model": MODEL,
        "data": {"train": dataset["id"]},
        "method": {"name": "causal_lm"},
        "hyperparameters": {"epochs": 1, "batch_size": BATCH_SIZE},
        "resources": {"max_runtime_seconds": 6 * 3600},
    }
    started = time.monotonic()
    worker_resident = caps.worker.resident if caps is not None else lambda: 0
    with Peak(lambda: trainers_hwm(stack)) as trainer, Peak(worker_resident) as worker_group:
        job_id = client.post("/v1/jobs", json=spec).raise_for_status().json()["id"]
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(1)
    train_s = time.monotonic() - started
    if job["status"] != "succeeded":
        kills = f"; OOM kills under the cap: {caps.oom_kills()}" if caps else ""
        raise RuntimeError(
            f"job {job_id} ended {job['status']}: {job['error']}{kills}\n{stack.logs()}"
        )
    steps = int(job["metrics"]["steps"])
    seen = sum(batch_sizes(dataset["splits"]["train"], BATCH_SIZE)[:steps])
    return seen, trainer.peak, train_s, worker_group.peak if caps is not None else None


# The baseline reads one .jsonl of the corpus whole: past this, it would take longer than the
# rest of the run and need more memory than the machine has spare.
BASELINE_UP_TO = 256 * 1024**2


def run(
    sizes_mib: list[float],
    work: Path,
    cap_mib: float | None,
    worker_cap_mib: float,
    train_up_to_mib: float,
    baseline_timeout_s: float = 1800,
) -> tuple[list[Measured], str]:
    """The figures for each size, and what cap they ran under (or why none)."""
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
            caps, capped = None, "no cap (--cap-mib 0)"
            if cap_mib:
                try:
                    caps = Caps.around(
                        stack, *(int(c * 1024**2) for c in (cap_mib, worker_cap_mib))
                    )
                    capped = (
                        f"the API capped at {cap_mib:.0f} MiB, the worker's group at "
                        f"{worker_cap_mib:.0f} MiB (memory cgroups, {caps.api.files.limit})"
                    )
                except CapUnavailable as error:
                    capped = f"no cap: {error}"
            try:
                for i, size in enumerate(sizes_mib):
                    corpus = make_corpus(work / f"corpus-{i}", int(size * 1024**2), seed=i)
                    found.append(measure(stack, client, s3, corpus, f"c{i}", caps,
                                         size <= train_up_to_mib, baseline_timeout_s))  # fmt: skip
                    for shard in [
                        *corpus.shards,
                        corpus.jsonl,
                    ]:  # moto keeps them; the disk need not
                        shard.unlink()
                if caps is not None:
                    capped += f"; OOM kills: {caps.oom_kills()}"
            finally:
                if caps is not None:
                    caps.remove()
    return found, capped


def _mib(value: int | None) -> str:
    return "did not finish" if value is None else f"{value / 1024**2:.0f} MiB"


def report(found: list[Measured]) -> str:
    rows = []
    for m in found:
        size = f"{m.text_mib:.0f} MiB of text ({m.stored_mib:.0f} MiB stored), {m.rows} rows"
        registered = f"{_mib(m.api_peak)} (+{_mib(m.api_growth)}), {m.register_s:.0f} s"
        if m.api_group_peak is not None:
            registered += f"; its cgroup {_mib(m.api_group_peak)}"
        rows.append(Row(f"{size}: API peak while registering (growth)", registered))
        if m.seen is not None:
            trained = f"{_mib(m.trainer_peak)}, {m.train_s:.0f} s"
            if m.worker_group_peak is not None:
                trained += f"; the worker's cgroup {_mib(m.worker_group_peak)}"
            rows += [
                Row(f"{size}: trainer peak, one epoch", trained),
                Row(f"{size}: examples seen / training rows / rows stored",
                    f"{m.seen} / {m.train_rows} / {m.rows}", target="seen = training rows",
                    passed=m.seen == m.train_rows),
            ]  # fmt: skip
        if m.stream_check_peak is not None:
            rows.append(Row(f"{size}: checking one .jsonl of it, peak", _mib(m.stream_check_peak),
                            baseline=f"{_mib(m.whole_read_peak)} (read whole)"))  # fmt: skip
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="32,256,1024")
    parser.add_argument("--cap-mib", type=float, default=1024, help="the API's; 0: no cap")
    parser.add_argument(
        "--worker-cap-mib", type=float, default=1536,
        help="the worker's group: the Celery worker, its pool process, its zygote and a trainer",
    )  # fmt: skip
    parser.add_argument("--train-up-to-mib", type=float, default=256)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes_mib.split(",")]
    print(f"# bench.streaming, {machine()}")
    with tempfile.TemporaryDirectory(prefix="tunery-streaming-") as work:
        found, capped = run(
            sizes, Path(work), args.cap_mib, args.worker_cap_mib, args.train_up_to_mib
        )
    print(f"The API and the worker: {capped}.\n")
    print(report(found))


if __name__ == "__main__":
    main()
