"""Dispatch latency: `POST /v1/jobs` to the trainer's first training step, and where it goes.

Submits tiny jobs one at a time (the seed CNN on 5% of builtin:digits: one step, one epoch) to
a service on Postgres and Redis with a 2-process worker, and times each from just before the
POST to the end of its first training step: the job asks for `log_every_steps: 1`, so the
trainer reports the step's loss as it ends, timed by the trainer's clock. The service forks the
trainer from its warm zygote (`worker.trainer_process`).

Beside each job, in the same run:
- the broker hop alone: a trivial Celery task on the same Redis, sent with tunery's Celery
  configuration to a worker of its own, timed from just before the publish to the task's start;
- every tenth job, the trainer started directly (`python -m trainer.main`, no API,
  broker or supervisor) on the same spec: spawn to ready (imports, data, model), to its first
  step (its first progress event); the trainer's imports alone,
  in a process of their own: what a fresh interpreter would cost the job.

Run: `.venv/bin/python -m bench.dispatch` (about 5 minutes on 2 cores).
"""

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import httpx
import redis
from celery import Celery

from bench.timing import (
    REDIS_URL,
    Row,
    machine,
    metric_points,
    percentile,
    postgres_redis_stack,
    table,
    unix_time,
    wait_succeeded,
)
from tests.stack import Stack
from worker.celery_app import celery_app

TARGET_S = 1.0
PING_TASK = "bench.ping"
SPEC = {
    "kind": "finetune",
    "name": "dispatch",
    "model": {"architecture": "cnn"},
    "data": {"train": {"dataset": "builtin:digits", "fraction": 0.05}},
    "hyperparameters": {"epochs": 1, "batch_size": 64, "log_every_steps": 1},
    "resources": {"device": "cpu"},
}


@celery_app.task(name=PING_TASK)
def ping(sent_at: float, reply_key: str) -> None:
    """Runs in the ping worker: reports how long after its publish it started."""
    started = time.time()
    redis.Redis.from_url(celery_app.conf.broker_url).rpush(reply_key, started - sent_at)


@dataclass(frozen=True)
class JobTiming:
    post_s: float  # the POST's round trip
    to_claim_s: float  # the POST's answer to the worker's claim (the job's started_at)
    to_first_step_s: float  # just before the POST to the first training step


def time_job(client: httpx.Client) -> JobTiming:
    sent = time.time()
    response = client.post("/v1/jobs", json=SPEC)
    answered = time.time()
    response.raise_for_status()
    job = wait_succeeded(client, response.json()["id"])
    points = metric_points(client, job["id"])
    first_step = min(unix_time(p["time"]) for p in points if p["name"] == "step_loss")
    return JobTiming(answered - sent, unix_time(job["started_at"]) - answered, first_step - sent)


class Pinger:
    """A Celery worker with tunery's configuration on a queue of its own, and a producer."""

    def __init__(self, stack: Stack) -> None:
        self.queue = f"bench-ping-{uuid.uuid4().hex[:8]}"
        env = stack.env | {"TUNERY_QUEUE": self.queue}
        args = ["celery", "-A", "worker.celery_app", "worker", "-I", "bench.dispatch",
                "-c", "1", "-n", f"{self.queue}@%h", "--loglevel", "WARNING"]  # fmt: skip
        with open(stack.root / "ping-worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.processes.append(worker)  # stopped with the stack
        self.producer = Celery("bench-ping", broker=REDIS_URL)
        self.producer.conf.update(task_serializer="json")
        self.replies = redis.Redis.from_url(REDIS_URL, socket_timeout=None)  # BLPOP waits
        self.hop(timeout_s=120)  # the worker's start-up, and the producer's connection

    def hop(self, timeout_s: float = 30) -> float:
        key = f"{self.queue}-reply"
        self.producer.send_task(PING_TASK, args=[time.time(), key], queue=self.queue)
        reply = self.replies.blpop([key], timeout=timeout_s)
        if reply is None:
            raise TimeoutError(f"no ping reply within {timeout_s} s")
        return float(reply[1])


@dataclass(frozen=True)
class TrainerPhases:
    ready_s: float  # spawn to the log line just before training: imports, data, model
    first_step_s: float  # spawn to the first step's progress event


def _trainer_events(run_dir: Path, command: list[str], env: dict[str, str]) -> list[dict]:
    """Run a trainer on SPEC in `run_dir`; the JSON lines it writes to stdout."""
    run = {"job_id": "job_bench", "model_id": "model_bench", "spec": SPEC, "datasets": {},
           "output_path": str(run_dir / "model.safetensors")}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def _first(events: list[dict], type_: str) -> float:
    return next(e["time"] for e in events if e["type"] == type_)


def direct_trainer(env: dict[str, str]) -> TrainerPhases:
    """The trainer on SPEC with no API, broker or supervisor: its events on stdout."""
    with tempfile.TemporaryDirectory(prefix="tunery-bench-trainer-") as run_dir:
        spawned = time.time()
        command = [sys.executable, "-m", "trainer.main", run_dir]
        events = _trainer_events(Path(run_dir), command, env)
    return TrainerPhases(*(_first(events, type_) - spawned for type_ in ("log", "progress")))


# What a trainer imports: at start-up, then on its way to the first step: sklearn for the
# built-in datasets (their fixed split), torch._dynamo at the optimiser's first call.
IMPORTS = """import time; print(time.time(), flush=True)
import trainer.main; print(time.time(), flush=True)
import sklearn.datasets, sklearn.model_selection; print(time.time(), flush=True)
import torch._dynamo; print(time.time())"""


@dataclass(frozen=True)
class Imports:
    interpreter_s: float  # spawn to the first line of Python
    trainer_s: float  # import trainer.main
    sklearn_s: float
    dynamo_s: float


def imports(env: dict[str, str]) -> Imports:
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, check=True
    )
    times = [spawned, *(float(t) for t in done.stdout.split())]
    return Imports(*(later - earlier for earlier, later in itertools.pairwise(times)))


@dataclass
class Measurements:
    jobs: list[JobTiming]
    hops: list[float]
    direct: list[TrainerPhases]
    imports: list[Imports]


def measure(stack: Stack, jobs: int, direct_every: int = 10) -> Measurements:
    """`jobs` jobs one at a time, a broker hop after each, and every `direct_every` jobs a
    direct trainer and the import times, all with the worker's environment."""
    pinger = Pinger(stack)
    found = Measurements([], [], [], [])
    with stack.client() as client:
        for i in range(jobs):
            found.jobs.append(time_job(client))
            found.hops.append(pinger.hop())
            if i % direct_every == 0:
                found.direct.append(direct_trainer(stack.env))
                found.imports.append(imports(stack.env))
            print(
                f"job {i + 1}/{jobs}: first step after {found.jobs[-1].to_first_step_s:.2f} s, "
                f"broker hop {found.hops[-1] * 1000:.1f} ms",
                file=sys.stderr,
            )
    return found


def report(m: Measurements) -> str:
    first = [j.to_first_step_s for j in m.jobs]
    direct = [d.first_step_s for d in m.direct]
    to_claim = [j.to_claim_s for j in m.jobs]
    rows = [
        Row(
            f"POST → first training step, {name} of {len(first)} jobs",
            f"{percentile(first, q):.2f} s",
            f"{percentile(direct, q):.2f} s",
            f"{percentile(first, q) / percentile(direct, q):.2f}",
            f"≤ {TARGET_S:.0f} s" if q == 50 else "-",
            percentile(first, q) <= TARGET_S if q == 50 else None,
        )
        for name, q in (("p50", 50), ("p90", 90), ("max", 100))
    ]
    rows.append(
        Row(
            "broker hop, p50: POST answered → job claimed (tunery); publish → task start (ping)",
            f"{median(to_claim) * 1000:.0f} ms",
            f"{median(m.hops) * 1000:.1f} ms",
            f"{median(to_claim) / median(m.hops):.1f}",
        )
    )
    claim_to_step = [j.to_first_step_s - j.post_s - j.to_claim_s for j in m.jobs]
    phases = [
        ("POST round trip (check, insert, commit, answer)", [j.post_s for j in m.jobs]),
        ("POST answered → job claimed (send, Redis, Celery, claim)", to_claim),
        ("job claimed → first step (supervisor, trainer forked by the zygote)", claim_to_step),
        (
            "direct trainer: spawn → ready to train (imports, data, model)",
            [d.ready_s for d in m.direct],
        ),
        ("- separately: interpreter start", [i.interpreter_s for i in m.imports]),
        ("- separately: `import trainer.main`", [i.trainer_s for i in m.imports]),
        ("- separately: sklearn (the built-in datasets' split)", [i.sklearn_s for i in m.imports]),
        (
            "- separately: torch._dynamo (imported at the optimiser's first call)",
            [i.dynamo_s for i in m.imports],
        ),
        ("direct trainer: ready → first step done", [d.first_step_s - d.ready_s for d in m.direct]),
    ]
    breakdown = [
        "| where the time goes (medians) | seconds |",
        "|---|---|",
        *(f"| {label} | {median(values):.3f} |" for label, values in phases),
        "",
        f"Baseline: a fresh trainer interpreter started directly, spawn → its first step "
        f"({len(direct)} runs); "
        f"ping: {len(m.hops)} hops, p90 {percentile(m.hops, 90) * 1000:.1f} ms, "
        f"max {max(m.hops) * 1000:.1f} ms.",
    ]
    return "\n".join([table(rows), "", *breakdown])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="jobs, one at a time")
    args = parser.parse_args()
    print(f"# bench.dispatch: {machine()}")
    with postgres_redis_stack(concurrency=2) as stack:
        found = measure(stack, args.jobs)
    print(report(found))


if __name__ == "__main__":
    main()
