"""What the performance benchmarks (`bench.overhead`, `bench.dispatch`, `bench.ingest`) share:
a tunery on Postgres and Redis started for the run, its processes and their CPU time, jobs
submitted and read back through its API, percentiles, and the side-by-side table each of them
prints."""

import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from tests import stack as stacks
from tests.stack import Stack

REDIS_URL = stacks.REDIS_URL
# tests.stack speeds the heartbeat and the reconciler up for tests; a benchmark measures the
# service as it is deployed, with its own defaults.
DEPLOYED = {"TUNERY_HEARTBEAT_SECONDS": "1", "TUNERY_RECONCILE_INTERVAL_SECONDS": "10"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def postgres_redis_stack(
    concurrency: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`tests.stack.postgres_redis_stack` with the service's deployed defaults, in a directory
    of its own removed on exit. On failure the processes' logs are printed, since their
    directory goes too."""
    root = Path(tempfile.mkdtemp(prefix="tunery-bench-"))
    try:
        env = {**DEPLOYED, **(extra_env or {})}
        with stacks.postgres_redis_stack(root, "bench", concurrency, env) as stack:
            try:
                yield stack
            except BaseException:
                print(stack.logs(), file=sys.stderr)
                raise
    finally:
        shutil.rmtree(root, ignore_errors=True)


def psycopg_url(stack: Stack) -> str:
    """The stack's database, for psycopg rather than SQLAlchemy."""
    return stack.env["TUNERY_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)


def cpu_seconds(pid: int, reaped_children: bool = False) -> float | None:
    """User plus system CPU time of a live process (all its threads) or, with
    `reaped_children`, of its children that have exited and been waited for; None once it is
    gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    first = 13 if reaped_children else 11  # cutime, cstime; utime, stime
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


@dataclass(frozen=True)
class Process:
    role: str  # "api", "worker" (Celery and its pool: the supervisors), "trainer", "postgres"
    command: str


def service_processes(stack: Stack) -> dict[int, Process]:
    """The live processes of a stack by pid: its API server and Celery worker with their
    descendants, and the Postgres backends serving its database."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[pid] = command.replace(b"\0", b" ").decode(errors="replace")
    found = {}
    # The first two are the API server and the worker; a benchmark may add its own after them.
    for root, role in zip(stack.processes[:2], ("api", "worker"), strict=True):
        tree = {root.pid}
        while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
            tree |= grown
        for pid in tree:
            # A trainer, exec'd or forked from the worker's zygote (`worker.trainer_process`),
            # is titled so; the zygote itself counts with the worker.
            command = commands[pid]
            trainer = "-m trainer.main" in command
            found[pid] = Process("trainer" if trainer else role, command)
    database = psycopg_url(stack).rsplit("/", 1)[1]
    for pid, command in commands.items():
        if f" {database} " in command:  # "postgres: 15/main: USER DATABASE HOST state"
            found[pid] = Process("postgres", command)
    return found


def submit(client: httpx.Client, spec: dict) -> str:
    response = client.post("/v1/jobs", json=spec)
    response.raise_for_status()
    return response.json()["id"]


def wait_succeeded(
    client: httpx.Client, job_id: str, poll_s: float = 0.5, timeout_s: float = 900
) -> dict:
    """The finished job; an error unless it succeeded. Each poll costs the API (and so a job
    on a small machine) some CPU: poll no more often than what is measured needs."""
    deadline = time.monotonic() + timeout_s
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
    return job


def metric_points(client: httpx.Client, job_id: str) -> list[dict]:
    """Every metric point of a job, in order, all pages."""
    points, cursor = [], None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
        page.raise_for_status()
        body = page.json()
        points += body["data"]
        if not (cursor := body["next_cursor"]):
            return points


def unix_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class EpochEnd:
    """When an epoch ended, by the trainer's clock: its training-loss point is reported right
    after the epoch's validation."""

    time: float
    step: int


def epoch_ends(points: Sequence[dict]) -> list[EpochEnd]:
    ends = [
        EpochEnd(unix_time(p["time"]), p["step"])
        for p in points
        if p["name"] == "loss" and p["split"] == "train"
    ]
    return sorted(ends, key=lambda end: end.time)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in (0, 100]: a value that was measured, never interpolated."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Row:
    """One figure of a benchmark's table, its cells formatted by the caller."""

    figure: str
    tunery: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    passed: bool | None = None  # None: reported, no target

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("pass" if self.passed else "**FAIL**")


def table(rows: Sequence[Row]) -> str:
    """A Markdown table, as printed and as pasted into docs/PERFORMANCE.md."""
    lines = ["| figure | tunery | baseline | ratio | target | pass/fail |", "|---" * 6 + "|"]
    lines += [
        f"| {r.figure} | {r.tunery} | {r.baseline} | {r.ratio} | {r.target} | {r.verdict} |"
        for r in rows
    ]
    return "\n".join(lines)


def machine() -> str:
    """What a figure was measured on, for the header of a benchmark's output."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPU cores, "
        f"load average {load} at the start"
    )
