"""A chaos soak: jobs of every kind under faults injected at random, measured.

A service on this machine's own processes: the API server and two Celery workers (one job at a
time each) on a private PostgreSQL and Redis (`tests/servers.py`). Several clients, each a
thread with its own HTTP client, submit a stream of small jobs of every kind (finetune,
pretrain, adapt; several methods and architectures) and a few sweeps among them (3 trials,
one at a time), each with an `Idempotency-Key`, and each follows what it submitted to its
end. A POST that gets no answer (the API server being restarted) or a 5xx is sent again with
the same key; every answered POST is also replayed once, and must name the same job or sweep.

Meanwhile a fault injector, its plan drawn from a fixed seed, injects faults of five kinds:
`kill -9` of a trainer; `kill -9` of a worker (its Celery processes, its trainer with them),
then a new worker; Redis, or PostgreSQL, stopped for 0.5-3 s and started again; `kill -9` of
the API server, then a new one. Each fault waits for a job drawn from the stream (the fault's
own) to be training, then a random delay (0.3-1.5 s), then strikes: a kill takes that job's
trainer or worker. The jobs after it in the stream are submitted only once it has struck, so
that every fault finds jobs running. The run stops by itself once every job has ended.

Then, from the service's database and the machine's processes:
- what ran: jobs submitted (by kind), faults injected (by kind), jobs ended (by status);
- hard checks (any failure, the script exits 1): lost jobs or sweeps (never ended), jobs with
  more than one model, succeeded jobs without their model, duplicate submissions (jobs or
  sweeps beyond one per key, a replay naming another, a sweep with more trials than its
  `max_trials`), metric points stored twice by one attempt, trainer
  processes left running, scratch directories left under `TUNERY_RUN_DIR`, faults planned
  but not injected;
- wasted training, as Ray Train counts it: steps trained more than once ÷ steps needed. The
  jobs report every step (`log_every_steps: 1`), so each attempt's first and last stored step
  show what it trained; an attempt killed with its worker loses its last heartbeat's points
  (0.5 s), so this is a lower bound;
- recovery: from each fault to the next training step of each job it struck (a killed job's
  first step in its next attempt; for a restarted server, the next step of each job that was
  training), p50 and p90 per kind of fault.

The service runs with the chaos tests' settings (but a checkpoint every 50 steps), lease 4 s,
heartbeat 0.5 s, reconciler every 1 s, re-dispatch after 3 s, `max_attempts` 3 (deployed).

Run: `.venv/bin/python -m bench.chaos` (40 jobs, 2 sweeps, 3 faults of each kind, seed 0:
about 3 minutes on 2 cores). `make test` runs the short form, `--jobs 6 --sweeps 1
--faults-per-kind 1`. With
`TUNERY_TEST_DATABASE_URL` / `TUNERY_TEST_REDIS_URL` naming servers, those are used and never
restarted: their faults are skipped, and said so.
"""

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bench.timing import machine, percentile, postgres_redis_stack, psycopg_url
from tests import servers
from tests.stack import Stack, trainer_pids

KINDS = {
    "trainer_kill": "kill -9 of a trainer",
    "worker_kill": "kill -9 of a worker, a new one started",
    "redis_restart": "Redis stopped and started",
    "postgres_restart": "PostgreSQL stopped and started",
    "api_restart": "kill -9 of the API server, a new one started",
}
SERVER_OF = {"redis_restart": "redis", "postgres_restart": "postgres"}
TERMINAL = ("succeeded", "failed", "cancelled", "pruned")  # a job's; a sweep's, the first 3
CHECKPOINT_EVERY = 50
SETTINGS = {
    "TUNERY_CHECKPOINT_EVERY_STEPS": str(CHECKPOINT_EVERY),
    "TUNERY_LEASE_SECONDS": "4",
    "TUNERY_REDISPATCH_AFTER_SECONDS": "3",
    "TUNERY_HEARTBEAT_SECONDS": "0.5",
    "TUNERY_RECONCILE_INTERVAL_SECONDS": "1",
    "OMP_NUM_THREADS": "1",  # two workers, one trainer each, on 2 cores
}
WORKERS = 2
DELAY_S = (0.3, 1.5)  # from the fault's job seen training to the fault
DOWN_S = (0.5, 3.0)  # a restarted server: stopped for this long, then started again
REQUEST_DEADLINE_S = 120  # a request retried through an outage
JOB_DEADLINE_S = 600  # a job, from its submission to its end
WAIT_S = 180  # the injector waiting for its job to train
GONE_S = 20  # trainers and scratch directories, after the jobs ended

# Small jobs of every kind, a few seconds of training each on one CPU thread; every step
# reports its loss, so that what each attempt trained is in the database.
CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 32, "layers": 1, "heads": 2, "max_length": 32, "vocab_size": 300},
}
DIGITS = {"dataset": "builtin:digits", "per_class": 40}
SOURCE = {"dataset": "builtin:digits-rgb", "per_class": 40}
TARGET = {"dataset": "builtin:digits-m", "per_class": 40}


def _hp(epochs: int, batch_size: int = 8) -> dict:
    return {"epochs": epochs, "batch_size": batch_size, "log_every_steps": 1}


def _adapt(method: str) -> dict:
    params = {} if method == "source_only" else {"weight": 0.1}
    return {"kind": "adapt", "model": CNN, "method": {"name": method, "params": params},
            "data": {"source": SOURCE, "target": TARGET}, "hyperparameters": _hp(12)}  # fmt: skip


SPECS = [
    {"kind": "finetune", "model": CNN, "data": {"train": DIGITS}, "hyperparameters": _hp(12)},
    {"kind": "pretrain", "model": CNN, "method": {"name": "autoencoder"},
     "data": {"train": DIGITS}, "hyperparameters": _hp(12)},
    _adapt("dann"),
    {"kind": "pretrain", "model": TRANSFORMER, "method": {"name": "causal_lm"},
     "data": {"train": {"dataset": "builtin:bbc-news", "per_class": 4}},
     "hyperparameters": _hp(8, 16)},
    _adapt("coral"),
    {"kind": "finetune", "model": {"architecture": "mlp"},
     "data": {"train": "builtin:breast-cancer"}, "hyperparameters": _hp(40)},
    {"kind": "pretrain", "model": CNN, "method": {"name": "contrastive"},
     "data": {"train": DIGITS}, "hyperparameters": _hp(12)},
    _adapt("mmd"),
    {"kind": "pretrain", "model": {"architecture": "mlp"}, "method": {"name": "autoencoder"},
     "data": {"train": "builtin:breast-cancer"}, "hyperparameters": _hp(40)},
    _adapt("source_only"),
]  # fmt: skip


# A sweep: 3 trials of a small job, one at a time, each an ordinary job under the same faults.
SWEEP = {
    "job": {**SPECS[5], "hyperparameters": _hp(10)},  # the MLP on the table, 500 steps
    "parameters": {
        "hyperparameters.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
    },
    "sampler": {"name": "random", "seed": 0},
    "max_trials": 3,
    "max_parallel_trials": 1,
}


def spec_of(number: int) -> dict:
    return {**SPECS[number % len(SPECS)], "name": f"chaos-{number}"}


def sweep_positions(jobs: int, sweeps: int) -> set[int]:
    """Where the sweeps are in a stream of `jobs` jobs and `sweeps` sweeps: spread evenly."""
    items = jobs + sweeps
    return {(k + 1) * items // (sweeps + 1) for k in range(sweeps)}


@dataclass
class Fault:
    kind: str
    job: int  # the number of the job in the stream it waits for
    delay_s: float
    down_s: float  # for a server restart: how long it stays stopped
    at: float | None = None  # when it struck (time.time())
    took_s: float = 0.0  # the restart it includes, for the kinds that restart something
    struck: list[str] = field(default_factory=list)  # the jobs training when it struck
    note: str = ""  # why it was not injected


@dataclass
class Submission:
    number: int
    key: str
    kind: str  # the job's kind, or "sweep"
    job_id: str | None = None
    status: str | None = None  # as its client last saw it
    replay_id: str | None = None  # the job a replay of the POST named


def plan(
    items: int, faults_per_kind: int, kinds: list[str], seed: int, sweeps: set[int]
) -> list[Fault]:
    """The faults in the order they strike, each after a job of the stream (of `items`, the
    sweeps at `sweeps`) drawn by `seed`."""
    rng = random.Random(seed)
    order = [kind for kind in kinds for _ in range(faults_per_kind)]
    rng.shuffle(order)
    jobs = [n for n in range(items) if n not in sweeps]
    if len(order) < len(jobs):  # each after a different job, and never after the last
        after = sorted(rng.sample(jobs[:-1], len(order)))
    else:
        after = sorted(rng.choices(jobs, k=len(order)))
    return [
        Fault(kind, job, rng.uniform(*DELAY_S), rng.uniform(*DOWN_S))
        for kind, job in zip(order, after, strict=True)
    ]


class Soak:
    """The clients, the injector and what they saw."""

    def __init__(
        self, stack: Stack, items: int, sweeps: set[int], clients: int, faults: list[Fault]
    ) -> None:
        self.stack, self.jobs, self.clients, self.faults = stack, items, clients, faults
        self.runs = stack.root / "runs"
        self.submissions = [
            Submission(
                n, f"chaos-{uuid.uuid4().hex}", "sweep" if n in sweeps else spec_of(n)["kind"]
            )
            for n in range(items)
        ]
        self.lock = threading.Condition()
        self.taken = 0  # job numbers handed to clients so far
        self.struck = 0  # faults done (injected or given up)
        self.stop = threading.Event()
        self.answers: Counter[int] = Counter()  # HTTP status -> answers
        self.server_errors: list[tuple[float, str, int]] = []  # (time, request, status)
        self.transport_errors = 0
        self.errors: list[str] = []  # what went wrong in a thread

    # --- the clients
    def _take(self) -> Submission | None:
        """The next job of the stream, once every fault planned before it has struck."""
        deadline = time.monotonic() + JOB_DEADLINE_S
        with self.lock:
            while self.taken < self.jobs and not self.stop.is_set():
                before = sum(1 for f in self.faults if f.job < self.taken)
                if self.struck >= before:
                    self.taken += 1
                    return self.submissions[self.taken - 1]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.taken} waited for its faults too long")
                self.lock.wait(timeout=1)
        return None

    def _request(self, client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
        """The answer, retried with the same request (and key) while the API cannot give one:
        no connection, or a 5xx; 429s are waited out."""
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        while True:
            try:
                response = client.request(method, url, **kwargs)
            except httpx.TransportError:
                response = None
                with self.lock:
                    self.transport_errors += 1
            if response is not None:
                with self.lock:
                    self.answers[response.status_code] += 1
                    if response.status_code >= 500:
                        self.server_errors.append(
                            (time.time(), f"{method} {url}", response.status_code)
                        )
                if response.status_code < 500 and response.status_code != 429:
                    return response
            if time.monotonic() > deadline or self.stop.is_set():
                raise TimeoutError(f"{method} {url}: no answer within {REQUEST_DEADLINE_S} s")
            retry_after = response.headers.get("retry-after") if response is not None else None
            time.sleep(float(retry_after) if retry_after else 0.5)

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.key}"}
        with httpx.Client(base_url=self.stack.base_url, headers=headers, timeout=10) as client:
            while (job := self._take()) is not None:
                sweep = job.kind == "sweep"
                route = "/v1/sweeps" if sweep else "/v1/jobs"
                body = {**SWEEP, "name": f"chaos-{job.number}"} if sweep else spec_of(job.number)
                key = {"Idempotency-Key": job.key}
                created = self._request(client, "POST", route, json=body, headers=key)
                if created.status_code != 201:
                    raise RuntimeError(
                        f"{route} {job.number}: {created.status_code} {created.text}"
                    )
                job.job_id = created.json()["id"]
                replay = self._request(client, "POST", route, json=body, headers=key)
                job.replay_id = replay.json().get("id")
                deadline = time.monotonic() + JOB_DEADLINE_S
                while job.status not in TERMINAL and time.monotonic() < deadline:
                    time.sleep(0.5)
                    read = self._request(client, "GET", f"{route}/{job.job_id}")
                    job.status = read.json()["status"]

    # --- the injector
    def _trainers(self) -> dict[int, str]:
        """This stack's trainer processes, by pid: the job each trains."""
        found = {}
        for pid in trainer_pids(str(self.runs)):
            with contextlib.suppress(OSError):  # gone meanwhile
                # A forked trainer's title is one string (setproctitle); a fresh one's, argv.
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if job := re.search(rf"{re.escape(str(self.runs))}/(job_\w+)/", command.decode()):
                    found[pid] = job[1]
        return found

    def _worker_of(self, pid: int) -> subprocess.Popen | None:
        """The live worker (its Celery main process) of which `pid` descends."""
        workers = {p.pid: p for p in self.stack.processes[1:] if p.poll() is None}
        while pid > 1:
            if pid in workers:
                return workers[pid]
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                return None
        return None

    def _wait_training(self, fault: Fault) -> None:
        """Until the fault's job is training (a trainer of it runs), or has ended."""
        job = self.submissions[fault.job]
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not self.stop.is_set():
            if job.job_id is not None and (
                job.job_id in self._trainers().values() or job.status in TERMINAL
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"job {fault.job} did not start training within {WAIT_S} s")

    def _strike(self, fault: Fault) -> None:
        """Inject the fault; `fault.at` is when the kill was sent, or the server stopped."""
        trainers = self._trainers()
        mine = self.submissions[fault.job].job_id
        # A kill takes the fault's job if it trains, else another that does.
        targets = [pid for pid, job in trainers.items() if job == mine] or sorted(trainers)[:1]
        if fault.kind == "trainer_kill":
            if not targets:
                fault.note = "no trainer was running"
                return
            fault.struck = [trainers[targets[0]]]
            pids = trainer_pids(fault.struck[0])  # every rank of it
            fault.at = time.time()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif fault.kind == "worker_kill":
            worker = self._worker_of(targets[0]) if targets else None
            if worker is None:
                fault.note = "no worker was training"
                return
            fault.struck = [job for pid, job in trainers.items() if self._worker_of(pid) is worker]
            fault.at = time.time()
            os.killpg(worker.pid, signal.SIGKILL)  # the worker and its trainer, at once
            worker.wait(timeout=30)
            self.stack.start_worker()
        else:
            fault.struck = sorted(set(trainers.values()))
            fault.at = time.time()
            if fault.kind == "api_restart":
                # Keep the log of the API server that is killed (restart_api writes a new one).
                restarted = self.stack.root / "api-restarted.log"
                if restarted.exists():
                    restarted.rename(self.stack.root / f"api-restarted-{fault.at:.0f}.log")
                self.stack.restart_api()
            else:
                server = servers.STARTED[SERVER_OF[fault.kind]]
                server.stop()
                time.sleep(fault.down_s)
                server.start()
        fault.took_s = time.time() - fault.at

    def _injector(self) -> None:
        for fault in self.faults:
            try:
                while True:
                    self._wait_training(fault)
                    time.sleep(fault.delay_s)
                    self._strike(fault)
                    if fault.at is not None or not self._move_to_the_next_job(fault):
                        break
                label = f"{KINDS[fault.kind]}: {', '.join(fault.struck) or fault.note or '-'}"
                print(f"fault {self.struck + 1}/{len(self.faults)}, {label}", file=sys.stderr)
            finally:
                with self.lock:
                    self.struck += 1
                    self.lock.notify_all()

    def _move_to_the_next_job(self, fault: Fault) -> bool:
        """A kill that found nothing training (every job before it ended within its delay)
        waits for the next job of the stream instead, and strikes as soon as it trains; False
        when there is none."""
        later = [
            n
            for n in range(fault.job + 1, len(self.submissions))
            if self.submissions[n].kind != "sweep"
        ]
        if fault.kind not in ("trainer_kill", "worker_kill") or not later:
            return False
        with self.lock:
            fault.job, fault.delay_s, fault.note = later[0], 0.0, ""
            self.lock.notify_all()  # the client held back by this fault may take its job
        return True

    def _guarded(self, target) -> None:
        try:
            target()
        except Exception as error:  # reported, and the run stops
            self.errors.append(f"{target.__name__}: {type(error).__name__}: {error}")
            self.stop.set()
            with self.lock:
                self.lock.notify_all()

    def run(self) -> None:
        """The clients in threads of their own; the injector in this one, the thread that
        started the servers: a server dies with the thread that started it (its
        PR_SET_PDEATHSIG, `tests.servers`), so one restarted by another thread would die when
        that thread ends."""
        clients = [
            threading.Thread(target=self._guarded, args=(self._client,), daemon=True)
            for _ in range(self.clients)
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + JOB_DEADLINE_S + self.jobs * 60
        try:
            self._guarded(self._injector)
            for thread in clients:
                thread.join(timeout=max(0, deadline - time.monotonic()))
        except BaseException:  # Ctrl-C: the clients stop asking, the stack is stopped
            self.stop.set()
            raise
        if any(thread.is_alive() for thread in clients):
            self.errors.append("the soak did not end before its deadline")
            self.stop.set()


# --- after the run: what the database and the machine hold
@dataclass
class Figures:
    submitted: Counter[str]  # by job kind, and "sweep"
    trials: int  # jobs the sweeps made
    sweeps_ended: Counter[str]  # by status
    injected: Counter[str]  # by fault kind
    ended: Counter[str]  # by status
    checks: list[tuple[str, int, str]]  # (what, how many, which): each must be 0
    steps_needed: int
    steps_redone: int  # at least
    steps_redone_at_most: int
    resumes: int
    reported_again: int  # metric points of a redone step, stored again by the later attempt
    recovery_s: dict[str, list[float]]  # by fault kind: fault to the next step, per job struck
    took_s: dict[str, list[float]]  # by fault kind: the restart itself
    server_errors: Counter[str]  # 5xx answers by the fault just before them ("none")
    orphaned: list[str]  # model files in the store that no model row names
    attempts: Counter[int]  # jobs by the attempts they took

    @property
    def failed(self) -> list[str]:
        return [what for what, found, _ in self.checks if found]


def _rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=10) as connection:
        return connection.execute(query, params).fetchall()


def _wait_empty(find, timeout: float = GONE_S) -> list:
    """What `find` still finds after up to `timeout` seconds of asking again."""
    deadline = time.monotonic() + timeout
    while (found := find()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _scratch_left(runs: Path) -> list[str]:
    return sorted(d.name for d in runs.glob("job_*") if d.is_dir()) if runs.exists() else []


def _redone(
    job_id: str,
    attempts: int,
    total: int,
    last: dict[tuple[str, int], int],
    resumed: dict[tuple[str, int], int],
) -> tuple[int, int]:
    """The steps of a job trained more than once: at least, and at most.

    Each attempt trained from its start (the checkpoint it resumed from, else step 0) to where
    it was stopped. At least to the last step it stored, or to the next attempt's checkpoint
    where that is further (it wrote that checkpoint; its last points may have died with it: a
    killed trainer's last 0.1 s, a killed worker's last heartbeat). At most to one step short
    of the checkpoint after that one, for an attempt followed by another: it would have saved
    it."""
    start = [resumed.get((job_id, n), 0) for n in range(1, attempts + 1)]
    low, high = [], []
    for n in range(1, attempts + 1):
        following = start[n] if n < attempts else None
        stored = max(last.get((job_id, n), 0), start[n - 1], following or 0)
        low.append(stored)
        if following is None:
            high.append(stored)
        else:
            high.append(max(stored, min(total, following + CHECKPOINT_EVERY - 1)))
    return tuple(
        sum(e - s for s, e in zip(start, end, strict=True)) - max(end, default=0)
        for end in (low, high)
    )


def measure(soak: Soak) -> Figures:
    url = psycopg_url(soak.stack)
    jobs = _rows(url, "SELECT id, kind, status, attempt, progress_total_steps FROM jobs")
    unfinished = [job_id for job_id, _, status, _, _ in jobs if status not in TERMINAL]
    if unfinished:  # give them the clients' deadline once more before calling them lost
        deadline = time.monotonic() + JOB_DEADLINE_S / 4
        while unfinished and time.monotonic() < deadline:
            time.sleep(1)
            rows = _rows(url, "SELECT id FROM jobs WHERE status <> ALL(%s)", list(TERMINAL))
            unfinished = [row[0] for row in rows]
        jobs = _rows(url, "SELECT id, kind, status, attempt, progress_total_steps FROM jobs")
    keys = dict(
        _rows(url, "SELECT key, response->>'id' FROM idempotency_keys WHERE route LIKE %s "
              "OR route LIKE %s", "% POST /v1/jobs", "% POST /v1/sweeps")
    )  # fmt: skip
    sent = [s for s in soak.submissions if s.job_id is not None]
    duplicates = [s.key for s in sent if s.replay_id != s.job_id or keys.get(s.key) != s.job_id]
    # A sweep's trials are jobs it made, at most its max_trials (each number once: a unique key).
    trial_of = dict(_rows(url, "SELECT id, sweep_id FROM jobs WHERE sweep_id IS NOT NULL"))
    sweeps = _rows(url, "SELECT id, status, coalesce((spec->>'max_trials')::int, 10) FROM sweeps")
    trials = Counter(trial_of.values())
    extra_jobs = [
        job_id for job_id, *_ in jobs if job_id not in set(keys.values()) and job_id not in trial_of
    ]
    extra_jobs += [sweep_id for sweep_id, *_ in sweeps if sweep_id not in set(keys.values())]
    extra_jobs += [f"{sweep_id}: {trials[sweep_id]} trials" for sweep_id, _, most in sweeps
                   if trials[sweep_id] > most]  # fmt: skip
    unfinished += [sweep_id for sweep_id, status, _ in sweeps if status not in TERMINAL[:3]]
    models = _rows(url, "SELECT source_job_id, count(*) FROM models GROUP BY source_job_id")
    model_count = dict(models)
    model_ids = {row[0] for row in _rows(url, "SELECT id FROM models")}
    stored = soak.stack.root / "artifacts" / "models"
    orphaned = sorted(
        d.name for d in (stored.iterdir() if stored.exists() else []) if d.name not in model_ids
    )
    twice = _rows(
        url,
        "SELECT job_id, attempt, name, split, step, count(*) FROM job_metrics "
        "GROUP BY job_id, attempt, name, split, step HAVING count(*) > 1",
    )
    (reported_again,) = _rows(
        url,
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM job_metrics "
        "GROUP BY job_id, name, split, step HAVING count(DISTINCT attempt) > 1) AS again",
    )[0]
    steps = _rows(
        url,
        "SELECT job_id, attempt, step, extract(epoch FROM time)::float FROM job_metrics "
        "WHERE name = 'step_loss' ORDER BY time",
    )
    resumed = {
        (job_id, attempt): int(re.search(r"at step (\d+)", message)[1])
        for job_id, attempt, message in _rows(
            url,
            "SELECT job_id, attempt, message FROM job_events "
            "WHERE message LIKE 'resumed from the checkpoint at step %%'",
        )
    }
    last: dict[tuple[str, int], int] = {}
    for job_id, attempt, step, _ in steps:
        last[job_id, attempt] = max(last.get((job_id, attempt), 0), step)
    redone = [
        _redone(job_id, attempts, total or 0, last, resumed)
        for job_id, _, _, attempts, total in jobs
    ]
    needed = sum(total or 0 for *_, total in jobs)

    # Recovery: from each fault to the next step of each job it struck; after a kill, the
    # next step of a later attempt than the one killed.
    times: dict[str, list[tuple[int, float]]] = {}
    for job_id, attempt, _, when in steps:
        times.setdefault(job_id, []).append((attempt, when))
    recovery: dict[str, list[float]] = {kind: [] for kind in KINDS}
    took: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for fault in soak.faults:
        if fault.at is None or fault.note:
            continue
        took[fault.kind].append(fault.took_s)
        for job_id in fault.struck:
            points = times.get(job_id, [])
            killed = max((a for a, when in points if when <= fault.at), default=0)
            later = killed + 1 if fault.kind in ("trainer_kill", "worker_kill") else 0
            after = [when for a, when in points if when > fault.at and a >= later]
            if after:  # none: it had trained its last step, or ran out of attempts
                recovery[fault.kind].append(min(after) - fault.at)

    trainers = _wait_empty(soak._trainers)
    scratch = _wait_empty(lambda: _scratch_left(soak.runs))
    not_injected = [f"{f.kind} ({f.note or 'not reached'})" for f in soak.faults if f.note or
                    f.at is None]  # fmt: skip
    checks = [
        ("lost jobs or sweeps (never ended)", len(unfinished), ", ".join(unfinished)),
        ("jobs with more than one model",
         sum(1 for n in model_count.values() if n > 1),
         ", ".join(j for j, n in model_count.items() if n > 1)),
        ("succeeded jobs without their model",
         sum(1 for j, _, st, *_ in jobs if st == "succeeded" and model_count.get(j) != 1),
         ", ".join(j for j, _, st, *_ in jobs if st == "succeeded" and model_count.get(j) != 1)),
        ("duplicate submissions created", len(extra_jobs) + len(duplicates),
         ", ".join(extra_jobs + duplicates)),
        ("metric points duplicated (one attempt, stored twice)",
         sum(row[-1] - 1 for row in twice), ", ".join(sorted({row[0] for row in twice}))),
        ("trainer processes left running", len(trainers), ", ".join(map(str, trainers))),
        ("scratch directories left", len(scratch), ", ".join(scratch)),
        ("faults planned but not injected", len(not_injected), ", ".join(not_injected)),
        ("errors of the soak itself", len(soak.errors), "; ".join(soak.errors)),
    ]  # fmt: skip
    return Figures(
        submitted=Counter(s.kind for s in sent),
        trials=len(trial_of),
        sweeps_ended=Counter(status for _, status, _ in sweeps),
        injected=Counter(f.kind for f in soak.faults if f.at is not None and not f.note),
        ended=Counter(status for _, _, status, *_ in jobs),
        checks=checks,
        steps_needed=needed,
        steps_redone=sum(low for low, _ in redone),
        steps_redone_at_most=sum(high for _, high in redone),
        resumes=len(resumed),
        reported_again=reported_again,
        recovery_s=recovery,
        took_s=took,
        attempts=Counter(attempt for _, _, _, attempt, _ in jobs),
        server_errors=Counter(_fault_before(soak.faults, when) for when, *_ in soak.server_errors),
        orphaned=orphaned,
    )


def _fault_before(faults: list[Fault], when: float) -> str:
    """The kind of the last fault injected before `when`, or "none"."""
    before = [f for f in faults if f.at is not None and f.at <= when]
    return max(before, key=lambda f: f.at).kind if before else "none"


def _seconds(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.2f} s" if values else "-"


def report(f: Figures, soak: Soak, skipped: list[str]) -> str:
    answers = ", ".join(f"{code}: {n}" for code, n in sorted(soak.answers.items()))
    statuses = ", ".join(f"{status} {f.ended[status]}" for status in TERMINAL if f.ended[status])
    others = ", ".join(f"{s} {n}" for s, n in f.ended.items() if s not in TERMINAL)
    attempts = ", ".join(f"{n} in {a}" for a, n in sorted(f.attempts.items()))
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(f.submitted.items()) if kind != "sweep")
    sweeps = ", ".join(f"{status} {n}" for status, n in sorted(f.sweeps_ended.items())) or "-"
    lines = [
        "| figure | value | required | pass/fail |",
        "|---|---|---|---|",
        f"| jobs submitted | {f.submitted.total() - f.submitted['sweep']} ({kinds}) | - | - |",
        f"| sweeps submitted | {f.submitted['sweep']} ({SWEEP['max_trials']} trials each, "
        f"one at a time): {f.trials} trials | - | - |",
        *(
            f"| faults injected: {label} | {f.injected[kind]}"
            f"{' (skipped: a server this run did not start)' if kind in skipped else ''}"
            " | - | - |"
            for kind, label in KINDS.items()
        ),
        f"| jobs ended (trials included) | {statuses}{'; ' + others if others else ''} | - | - |",
        f"| sweeps ended | {sweeps} | - | - |",
        f"| jobs by attempts taken | {attempts} | - | - |",
        *(
            f"| {what} | {found}{': ' + which if which else ''} | 0 | "
            f"{'**FAIL**' if found else 'pass'} |"
            for what, found, which in f.checks
        ),
        f"| wasted training: steps trained more than once ÷ steps needed | at least "
        f"{f.steps_redone} ÷ {f.steps_needed} = {f.steps_redone / max(1, f.steps_needed):.2%}, "
        f"at most {f.steps_redone_at_most} ÷ {f.steps_needed} = "
        f"{f.steps_redone_at_most / max(1, f.steps_needed):.2%} ({f.resumes} resumes from a "
        f"checkpoint, every {CHECKPOINT_EVERY} steps) | - | - |",
        f"| metric points of redone steps stored again by the later attempt | "
        f"{f.reported_again} | - | - |",
        f"| model files stored that no model names (an outcome the database did not take) | "
        f"{len(f.orphaned)}{': ' + ', '.join(f.orphaned) if f.orphaned else ''} | - | - |",
        f"| answers to the clients (HTTP status: count); no connection | {answers}; "
        f"{soak.transport_errors} | - | - |",
        "",
        "| fault | injected | recovery to the job's next step: p50 | p90 | jobs measured "
        "| down for, p50 | 5xx answers after it |",
        "|---|---|---|---|---|---|---|",
    ]
    every = [value for values in f.recovery_s.values() for value in values]
    for kind, label in KINDS.items():
        values, took = f.recovery_s[kind], f.took_s[kind]
        restart = _seconds(took, 50) if kind in ("api_restart", *SERVER_OF) else "-"
        lines.append(
            f"| {label} | {f.injected[kind]} | {_seconds(values, 50)} | {_seconds(values, 90)} "
            f"| {len(values)} | {restart} | {f.server_errors[kind]} |"
        )
    lines.append(
        f"| all | {f.injected.total()} | {_seconds(every, 50)} | {_seconds(every, 90)} "
        f"| {len(every)} | - | {f.server_errors.total()} |"
    )
    if soak.server_errors:
        requests = Counter(
            (re.sub(r"(job|sweep)_\w+", "{id}", what), code) for _, what, code in soak.server_errors
        )
        counted = ", ".join(f"{what} {code}: {n}" for (what, code), n in requests.items())
        lines += ["", f"5xx answers: {counted}"]
    return "\n".join(lines)


def restartable() -> list[str]:
    """The fault kinds this run can inject: servers only where it started them."""
    return [kind for kind in KINDS if kind not in SERVER_OF or SERVER_OF[kind] in servers.STARTED]


@dataclass
class Outcome:
    figures: Figures
    report: str
    seconds: float


def soak(
    jobs: int,
    faults_per_kind: int,
    seed: int,
    sweeps: int = 0,
    clients: int = 3,
    keep_logs: Path | None = None,
) -> Outcome:
    """A soak on a stack of its own (removed after), on the servers of `tests.servers`."""
    kinds = restartable()
    at = sweep_positions(jobs, sweeps)
    skipped = [kind for kind in KINDS if kind not in kinds]
    for kind in skipped:
        print(f"skipping {KINDS[kind]}: the server was named, not started, by this run",
              file=sys.stderr)  # fmt: skip
    faults = plan(jobs + sweeps, faults_per_kind, kinds, seed, at)
    started = time.monotonic()
    with postgres_redis_stack(concurrency=1, extra_env=SETTINGS) as stack:
        try:
            for _ in range(WORKERS - 1):
                stack.start_worker()
            run = Soak(stack, jobs + sweeps, at, clients, faults)
            run.run()
            figures = measure(run)
            text = report(figures, run, skipped)
            if figures.failed:
                print(stack.logs(), file=sys.stderr)
        finally:
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in stack.root.glob("*.log"):
                    shutil.copy(log, keep_logs / log.name)
            stack.stop()
            for pid in trainer_pids(str(stack.root / "runs")):  # none, unless the run failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    return Outcome(figures, text, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs submitted in all")
    parser.add_argument("--sweeps", type=int, default=2, help="sweeps, among the jobs")
    parser.add_argument("--faults-per-kind", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the fault plan's")
    parser.add_argument("--clients", type=int, default=3, help="threads submitting jobs")
    parser.add_argument("--keep-logs", type=Path, help="copy the service's logs here")
    args = parser.parse_args(argv)
    servers.start_unless_named()  # stopped and removed at exit
    print(
        f"# bench.chaos: {machine()}; seed {args.seed}, {args.jobs} jobs and {args.sweeps} "
        f"sweeps by {args.clients} "
        f"clients, {WORKERS} workers, {args.faults_per_kind} faults of each kind"
    )
    outcome = soak(
        args.jobs, args.faults_per_kind, args.seed, args.sweeps, args.clients, args.keep_logs
    )
    print(outcome.report)
    print(f"\n{outcome.seconds:.0f} s in all.")
    if outcome.figures.failed:
        print(f"FAILED: {'; '.join(outcome.figures.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
