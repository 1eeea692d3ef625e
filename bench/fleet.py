"""The control plane at fleet size: N simulated workers against the real Postgres and Redis.

This machine cannot host a fleet, but the service's own coordination can be loaded as if it
ran one. For each fleet size N, a fresh database and an API server (uvicorn, `app.main:app`)
on a private Postgres and Redis (`tests/servers.py`); jobs submitted through the API, which
publishes their `tunery.run_job` messages on Redis; then N workers (`bench.fleet_workers`:
threads in a few processes, each doing in the database what a supervisor does, with a trainer
that only sleeps) take those messages, claim the jobs, heartbeat (metric points and the lease
in one transaction) and record their outcomes for a window of `--seconds`. Meanwhile:

- the reconciler's pass (`reconciler.reconcile_once`) runs every 2 s in a process of its own,
  timed (deployed: every 10 s in each API process; the API's own is off here, so this is the
  only one);
- a client reads `GET /v1/jobs/{id}` of random jobs 20 times a second, timed;
- `pg_stat_activity` is sampled every half second (connections to the database);
- CPU time is read from /proc before and after: the whole Postgres server (postmaster, its
  live children, and those it reaped), Redis, the API server, the machine's busy cores (other
  sessions share it); each simulated-fleet process reads its own. The fleet's is the client's
  cost: this bench's, not the service's, and on these 2 cores it competes with Postgres;
- Postgres' time by statement, where the server loads `pg_stat_statements` (the one this
  starts does).

N = 0 is the baseline in the same run: the same API, reads and reconciler with no fleet.

The Postgres this starts is durable (fsync and synchronous commits on, as in production;
`--no-durable` for the test suite's settings) and allows 700 connections, so that a fleet
holding one connection per worker can be measured past the default limit of 100.

Run: `.venv/bin/python -m bench.fleet` (N = 10, 100, 500, 30 s each: about 5 minutes on
2 cores); `--fleet`, `--seconds`, `--heartbeat-seconds` and the rest for other runs. Figures
and the capacity model drawn from them: docs/SCALING.md.
"""

import argparse
import concurrent.futures
import contextlib
import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean, median

import psycopg

from bench.fleet_workers import Plan
from bench.timing import (
    CLOCK_TICKS,
    cpu_seconds,
    machine,
    percentile,
    postgres_redis_stack,
    psycopg_url,
    submit,
)
from tests import servers
from tests.stack import Stack

SPEC = {
    "kind": "finetune",
    "name": "fleet",
    "model": {"architecture": "cnn"},
    "data": {"train": {"dataset": "builtin:digits"}},
    "resources": {"device": "cpu"},
}
UNLIMITED = "100000000"
READS_PER_SECOND = 20
SAMPLE_SECONDS = 0.5
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# Where Postgres spends its time, by statement; on a server started without it, not reported.
STATEMENTS = "pg_stat_statements"
TOP_STATEMENTS = 8


@dataclass(frozen=True)
class Setup:
    seconds: float = 30.0  # the measured window, per fleet size
    heartbeat_seconds: float = 1.0  # TUNERY_HEARTBEAT_SECONDS; 1 is the deployed default
    job_seconds: float = 20.0  # each job's length, give or take a fifth
    points_per_heartbeat: int = 4
    processes: int = 2  # of simulated workers
    pool_size: int | None = None  # per process; None: a connection per worker
    tenants: int = 1  # jobs spread over this many tenants


@dataclass
class FleetRun:
    workers: int
    setup: Setup
    window_s: float
    submitted: int
    submit_s: float
    claims: list[tuple[float, float]]  # (start, seconds), start relative to the window's
    refused_claims: int
    heartbeats: list[tuple[float, float]]
    heartbeat_lateness: list[float]
    outcomes: list[tuple[float, float]]
    points_reported: int
    points_stored: int
    passes: list[float]  # reconciler passes, seconds
    reads: list[float]  # GET /v1/jobs/{id}, seconds
    connections: list[int]  # samples of pg_stat_activity for the database
    active_connections: list[int]
    cpu_s: dict[str, float | None] = field(default_factory=dict)  # by process, over the window
    # The database's costliest statements in the window: (calls, total seconds, text).
    statements: list[tuple[int, float, str]] = field(default_factory=list)
    # The whole machine's busy CPU over the window: other processes on a shared machine too.
    machine_cores: float = 0.0

    def cores(self, role: str) -> float | None:
        """CPU seconds per second of the window."""
        seconds = self.cpu_s.get(role)
        return None if seconds is None else seconds / self.window_s

    @property
    def burst_claims_per_s(self) -> float | None:
        """The first claims, all workers idle and the queue full: how fast they are taken."""
        first = sorted(start + seconds for start, seconds in self.claims)[: self.workers]
        if not self.workers or len(first) < self.workers:
            return None
        return len(first) / first[-1]


def server_cpu_seconds(pid: int) -> float | None:
    """CPU time of a server and all its processes: its own, its live children's, and that
    of the children it has reaped (a Postgres backend that exited)."""
    own, reaped = cpu_seconds(pid), cpu_seconds(pid, reaped_children=True)
    if own is None or reaped is None:
        return None
    children = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children += cpu_seconds(int(entry.name)) or 0.0
    return own + reaped + children


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle nor waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def _servers_cpu(stack: Stack) -> dict[str, float | None]:
    """The service's processes; a server the user named (not started here) is not ours."""
    found = {"api": cpu_seconds(stack.processes[0].pid)}
    for role in ("postgres", "redis"):
        server = servers.STARTED.get(role)
        found[role] = server_cpu_seconds(server.process.pid) if server else None
    return found


def _submit_jobs(stack: Stack, keys: list[str], count: int) -> list[str]:
    clients = [stack.client(key) for key in keys]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda i: submit(clients[i % len(clients)], SPEC), range(count)))
    finally:
        for client in clients:
            client.close()


class Sampler:
    """Job reads through the API and connection counts, in threads, until stopped."""

    def __init__(self, stack: Stack, key: str, job_ids: list[str]) -> None:
        self.stack, self.key, self.job_ids = stack, key, job_ids
        self.reads: list[float] = []
        self.connections: list[int] = []
        self.active: list[int] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._read), threading.Thread(target=self._count)]

    def __enter__(self) -> "Sampler":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def _read(self) -> None:
        rng = random.Random(0)
        with self.stack.client(self.key) as client:
            while not self.stopped.wait(1 / READS_PER_SECOND):
                started = time.perf_counter()
                client.get(f"/v1/jobs/{rng.choice(self.job_ids)}").raise_for_status()
                self.reads.append(time.perf_counter() - started)

    def _count(self) -> None:
        url = psycopg_url(self.stack)
        database = url.rsplit("/", 1)[1]
        query = ("SELECT count(*), count(*) FILTER (WHERE state = 'active') "
                 "FROM pg_stat_activity WHERE datname = %s")  # fmt: skip
        with psycopg.connect(url, autocommit=True) as connection:
            while not self.stopped.wait(SAMPLE_SECONDS):
                total, active = connection.execute(query, (database,)).fetchone()
                self.connections.append(total - 1)  # not this sampler's own
                self.active.append(active - 1)


class Statements:
    """pg_stat_statements of the stack's database, where the server loads it."""

    def __init__(self, stack: Stack) -> None:
        self.url = psycopg_url(stack)
        with psycopg.connect(self.url, autocommit=True) as connection:
            loaded = connection.execute("SHOW shared_preload_libraries").fetchone()[0]
            self.on = STATEMENTS in loaded
            if self.on:
                connection.execute(f"CREATE EXTENSION IF NOT EXISTS {STATEMENTS}")

    def reset(self) -> None:
        if self.on:
            with psycopg.connect(self.url, autocommit=True) as connection:
                connection.execute(f"SELECT {STATEMENTS}_reset()")

    def top(self) -> list[tuple[int, float, str]]:
        if not self.on:
            return []
        query = (f"SELECT calls, total_exec_time / 1000, query FROM {STATEMENTS} "
                 "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                 "ORDER BY total_exec_time DESC LIMIT %s")  # fmt: skip
        with psycopg.connect(self.url, autocommit=True) as connection:
            return [tuple(row) for row in connection.execute(query, (TOP_STATEMENTS,))]


def _metric_rows(stack: Stack) -> int:
    with psycopg.connect(psycopg_url(stack)) as connection:
        return connection.execute("SELECT count(*) FROM job_metrics").fetchone()[0]


def _start(plan: Plan, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fleet_workers", json.dumps(asdict(plan))],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _plans(workers: int, setup: Setup, results: Path) -> list[Plan]:
    """The fleet's processes, workers split evenly, then the reconciler's."""
    processes = min(setup.processes, workers)
    split = [workers // processes + (i < workers % processes) for i in range(processes)]
    common = {
        "heartbeat_seconds": setup.heartbeat_seconds,
        "job_seconds": setup.job_seconds,
        "points_per_heartbeat": setup.points_per_heartbeat,
    }
    plans = [
        Plan(
            n,
            results_path=str(results / f"fleet-{i}.json"),
            pool_size=setup.pool_size,
            seed=i,
            **common,
        )
        for i, n in enumerate(split)
    ]
    return [
        *plans,
        Plan(0, results_path=str(results / "reconciler.json"), reconciler=True, **common),
    ]


def run_fleet(workers: int, setup: Setup) -> FleetRun:
    """One fleet size on a fresh database and API server."""
    env = {"TUNERY_HEARTBEAT_SECONDS": str(setup.heartbeat_seconds),
           "TUNERY_RECONCILE_INTERVAL_SECONDS": "0"}  # fmt: skip
    with postgres_redis_stack(concurrency=0, extra_env=env) as stack:
        quotas = ("--max-running-jobs", UNLIMITED, "--max-queued-jobs", UNLIMITED,
                  "--requests-per-minute", UNLIMITED)  # fmt: skip
        keys = [stack.new_key(*quotas) for _ in range(setup.tenants)]
        # Enough jobs that no worker waits for one: each takes a new one as its last ends.
        per_worker = math.ceil(setup.seconds / (0.8 * setup.job_seconds)) + 1
        count = max(workers * per_worker, 10)
        submitted = time.perf_counter()
        job_ids = _submit_jobs(stack, keys, count)
        submit_s = time.perf_counter() - submitted
        with tempfile.TemporaryDirectory(prefix="tunery-fleet-") as results:
            plans = _plans(workers, setup, Path(results))
            processes = [_start(plan, stack.env) for plan in plans]
            try:
                for process in processes:
                    if process.stdout.readline().strip() != "ready":
                        raise RuntimeError("a fleet process did not start")
                rows_before = _metric_rows(stack)
                statements = Statements(stack)
                start_at = time.time() + 1
                stop_at = start_at + setup.seconds
                for process in processes:
                    process.stdin.write(f"{start_at} {stop_at}\n")
                    process.stdin.flush()
                time.sleep(max(0.0, start_at - time.time()))
                cpu_before, busy_before = _servers_cpu(stack), machine_busy_seconds()
                statements.reset()
                # Reads of the first tenant's jobs (submitted round-robin), as that tenant.
                with Sampler(stack, keys[0], job_ids[:: len(keys)]) as sampler:
                    time.sleep(max(0.0, stop_at - time.time()))
                    cpu_after, busy_after = _servers_cpu(stack), machine_busy_seconds()
                    top_statements = statements.top()
                for process in processes:
                    if process.wait(timeout=120) != 0:
                        raise RuntimeError("a fleet process failed")
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
            measured = [json.loads(Path(plan.results_path).read_text()) for plan in plans]
        points_stored = _metric_rows(stack) - rows_before
    fleet, (reconciling,) = measured[:-1], measured[-1:]
    cpu = {
        role: None if cpu_before[role] is None else cpu_after[role] - cpu_before[role]
        for role in cpu_before
    }
    cpu["fleet"] = sum(m["cpu_seconds"] for m in fleet)
    cpu["reconciler"] = reconciling["cpu_seconds"]

    def relative(kind: str) -> list[tuple[float, float]]:
        return sorted((start - start_at, seconds) for m in fleet for start, seconds in m[kind])

    return FleetRun(
        workers=workers,
        setup=setup,
        window_s=setup.seconds,
        submitted=count,
        submit_s=submit_s,
        claims=relative("claims"),
        refused_claims=sum(m["refused_claims"] for m in fleet),
        heartbeats=relative("heartbeats"),
        heartbeat_lateness=[late for m in fleet for late in m["heartbeat_lateness"]],
        outcomes=relative("outcomes"),
        points_reported=sum(m["points"] for m in fleet),
        points_stored=points_stored,
        passes=[seconds for _start, seconds in reconciling["passes"]],
        reads=sampler.reads,
        connections=sampler.connections,
        active_connections=sampler.active,
        cpu_s=cpu,
        statements=top_statements,
        machine_cores=(busy_after - busy_before) / setup.seconds,
    )


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.1f}" if values else "-"


def _cores(run: FleetRun, role: str) -> str:
    cores = run.cores(role)
    return "-" if cores is None else f"{cores:.2f}"


def report(runs: list[FleetRun]) -> str:
    """Three tables: the load carried, what it cost, and the cost per unit."""
    load = [
        "| workers | claims/s (burst of the first N) | claims/s (window) | claim ms p50 / p99 "
        "| heartbeats/s (offered) | heartbeat ms p50 / p99 | heartbeat late s p99 "
        "| points/s stored | outcome ms p50 / p99 |",
        "|---" * 9 + "|",
    ]
    costs = [
        "| workers | Postgres cores | connections max (active, mean) | reconciler pass ms "
        "p50 / max | API GET job ms p50 / p99 | API cores | Redis cores | fleet (client) cores "
        "| whole machine cores (of 2) |",
        "|---" * 9 + "|",
    ]
    units = [
        "| workers | transactions/s | Postgres CPU ms per transaction | per heartbeat "
        "| per worker-second | client CPU ms per heartbeat |",
        "|---" * 6 + "|",
    ]
    for run in runs:
        window = run.window_s
        burst = run.burst_claims_per_s
        hb = len(run.heartbeats)
        offered = run.workers / run.setup.heartbeat_seconds
        load.append(
            f"| {run.workers} | {'-' if burst is None else f'{burst:.0f}'} "
            f"| {len(run.claims) / window:.1f} "
            f"| {_ms([s for _, s in run.claims], 50)} / {_ms([s for _, s in run.claims], 99)} "
            f"| {hb / window:.0f} ({offered:.0f}) "
            f"| {_ms([s for _, s in run.heartbeats], 50)} / "
            f"{_ms([s for _, s in run.heartbeats], 99)} "
            f"| {percentile(run.heartbeat_lateness, 99) if hb else 0:.2f} "
            f"| {run.points_stored / window:.0f} "
            f"| {_ms([s for _, s in run.outcomes], 50)} / {_ms([s for _, s in run.outcomes], 99)} |"
        )
        conns = run.connections or [0]
        active = run.active_connections or [0]
        costs.append(
            f"| {run.workers} | {_cores(run, 'postgres')} "
            f"| {max(conns)} ({mean(active):.1f}) "
            f"| {_ms(run.passes, 50)} / {_ms(run.passes, 100)} "
            f"| {_ms(run.reads, 50)} / {_ms(run.reads, 99)} "
            f"| {_cores(run, 'api')} | {_cores(run, 'redis')} | {_cores(run, 'fleet')} "
            f"| {run.machine_cores:.2f} |"
        )
        postgres = run.cpu_s.get("postgres")
        if run.workers and hb and postgres is not None:
            # A claim comes with its inputs' read; an outcome with two reads after it.
            transactions = hb + 2 * len(run.claims) + 3 * len(run.outcomes)
            units.append(
                f"| {run.workers} | {transactions / window:.0f} "
                f"| {postgres / transactions * 1000:.2f} | {postgres / hb * 1000:.2f} "
                f"| {postgres / (window * run.workers) * 1000:.1f} "
                f"| {run.cpu_s['fleet'] / hb * 1000:.2f} |"
            )
    return "\n".join([*load, "", *costs, "", *units, *map(_statements, runs)])


def _statements(run: FleetRun) -> str:
    """Postgres' time by statement: execution time, lock and commit waits included."""
    if not run.statements:
        return ""
    total = sum(seconds for _calls, seconds, _query in run.statements)
    lines = [
        f"\nN = {run.workers}: the database's {len(run.statements)} costliest statements "
        f"({total:.1f} s of execution in the {run.window_s:.0f} s window)",
        "",
        "| calls/s | mean ms | share | statement |",
        "|---|---|---|---|",
    ]
    for calls, seconds, query in run.statements:
        text = " ".join(query.split())[:90].replace("|", "\\|")
        lines.append(
            f"| {calls / run.window_s:.1f} | {seconds / calls * 1000:.2f} "
            f"| {seconds / total:.0%} | `{text}` |"
        )
    return "\n".join(lines)


def describe(setup: Setup) -> str:
    connections = (
        "a connection per worker"
        if setup.pool_size is None
        else f"{setup.pool_size} pooled connections per process"
    )
    return (
        f"{setup.seconds:.0f} s per fleet size, heartbeat every {setup.heartbeat_seconds:g} s, "
        f"jobs of {setup.job_seconds:g} s, {setup.points_per_heartbeat} metric points per "
        f"heartbeat, {setup.processes} fleet processes, {connections}, "
        f"{setup.tenants} tenant(s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, nargs="+", default=[10, 100, 500])
    defaults = Setup()
    for name, value in asdict(defaults).items():
        kind = (
            int if name in ("processes", "pool_size", "tenants", "points_per_heartbeat") else float
        )
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    parser.add_argument("--no-durable", action="store_true", help="the test suite's Postgres")
    parser.add_argument("--json", type=Path, help="write every measurement here too")
    args = parser.parse_args(argv)
    setup = Setup(**{name: getattr(args, name) for name in asdict(defaults)})
    settings = {"max_connections": "700", "shared_preload_libraries": STATEMENTS,
                **({} if args.no_durable else DURABLE)}  # fmt: skip
    servers.start_unless_named(settings)  # stopped and removed at exit
    durability = "fsync off" if args.no_durable else "durable"
    print(f"# bench.fleet: {machine()}; {describe(setup)}; Postgres {durability}")
    runs = []
    for workers in [0, *args.fleet]:
        runs.append(run_fleet(workers, setup))
        run = runs[-1]
        print(
            f"N={workers}: {len(run.claims)} claims, {len(run.heartbeats)} heartbeats, "
            f"{run.points_stored} points, {run.submitted} jobs submitted in {run.submit_s:.1f} s",
            file=sys.stderr,
        )
    print(report(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(run) for run in runs]))
    print(f"\nmedian submit: {median(r.submitted / r.submit_s for r in runs):.0f} jobs/s")


if __name__ == "__main__":
    main()
