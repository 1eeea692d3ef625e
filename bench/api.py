"""The API's read path: `GET /v1/jobs/{id}` under concurrent load, and a tenant's jobs listed
page by page, on Postgres.

Starts the real API (`uvicorn app.main:app`) on a fresh Postgres database with Redis as the
broker (no worker: nothing here trains), makes a tenant and key with the admin command, and
inserts `--jobs` jobs for it in one transaction. Then:

- load: `--clients` concurrent keep-alive clients for `--seconds` each on `GET /healthz` (the
  framework's ceiling on this machine: no key, no database) and on `GET /v1/jobs/{id}` over
  random ids; req/s, p50/p90/p99 latency and errors, with uvicorn as `make run` starts it, in
  one process and in two (`--workers 2`), then without the access log (`CONFIGURATIONS`).
  The load generator is aiohttp's client in a process of its own (httpx's async client spent
  about 2 ms of CPU a request here, 30 times as much, and took the server's cores); the CPU
  it, the server and the whole machine used is printed beside each row, since they share
  the same cores.
- listing: every job walked with `limit=100` through `next_cursor` (latency of pages 1, 10, 50
  and 100), beside the same pages as OFFSET queries timed directly in SQL, and the keyset query
  of the deepest page under `EXPLAIN (ANALYZE, BUFFERS)`, and that of the last page of the
  jobs of one status (`status=failed`).

Run: `.venv/bin/python -m bench.api` (about 3 min; Postgres and Redis on 127.0.0.1).
"""

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import psutil
from pydantic import TypeAdapter
from sqlalchemy import Engine, Select, insert, select, text

from app.db import make_engine
from app.models import ApiKey, Job
from app.services import jobs
from app.services.auth import secret_sha256
from tests.stack import (
    create_postgres_database,
    create_tenant_key,
    drop_postgres_database,
    free_port,
    postgres_url,
)
from trainer.spec import JobSpec

PAGE_SIZE = 100
SHOWN_PAGES = (1, 10, 50, 100)
# Jobs submitted together share a creation time: the listing has ties to break by id.
JOBS_PER_INSTANT = 4
REPEATS = 7  # of each listing walk and each SQL query; the median is shown


# --- the data -----------------------------------------------------------------------------


def job_rows(tenant_id: str, count: int) -> list[dict]:
    """`count` jobs as `create_job` would leave them, most of them finished with metrics."""
    spec = TypeAdapter(JobSpec).validate_python(
        {"kind": "finetune", "model": {"architecture": "cnn"}, "data": {"train": "builtin:digits"}}
    )
    spec_json = spec.model_dump(mode="json")
    start = datetime.now(UTC) - timedelta(days=30)
    statuses = ["succeeded"] * 7 + ["failed", "queued", "running"]
    rows = []
    for i in range(count):
        status = statuses[i % len(statuses)]
        done = status in ("succeeded", "failed")
        rows.append(
            {
                "id": f"job_{uuid.uuid4().hex}",
                "tenant_id": tenant_id,
                "kind": "finetune",
                "name": f"bench-{i}",
                "status": status,
                "spec": spec_json,
                "metrics": {"test_accuracy": 0.97, "test_loss": 0.11} if done else {},
                "error_type": "TrainingError" if status == "failed" else None,
                "error_message": "loss became NaN" if status == "failed" else None,
                "progress_step": 200 if done else 0,
                "progress_epoch": 10 if done else 0,
                "progress_total_steps": 200,
                "attempt": 1 if status != "queued" else 0,
                "max_attempts": 3,
                "created_at": start + timedelta(seconds=i // JOBS_PER_INSTANT),
                "started_at": start if status != "queued" else None,
                "finished_at": start if done else None,
            }
        )
    return rows


def insert_jobs(engine: Engine, key: str, count: int) -> tuple[str, list[str]]:
    """The key's tenant and the ids of `count` new jobs of it, inserted in one transaction."""
    with engine.begin() as connection:
        tenant_id = connection.scalar(
            select(ApiKey.tenant_id).where(ApiKey.secret_sha256 == secret_sha256(key))
        )
        rows = job_rows(tenant_id, count)
        connection.execute(insert(Job), rows)
        connection.exec_driver_sql("ANALYZE jobs")
    return tenant_id, [row["id"] for row in rows]


# --- the server ---------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: psutil.Process

    def cpu_seconds(self) -> float:
        """CPU used so far by uvicorn and its worker processes."""
        total = 0.0
        for process in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


@dataclass(frozen=True)
class Configuration:
    workers: int = 1
    access_log: bool = True  # uvicorn's default, and `make run`'s

    def __str__(self) -> str:
        words = [f"{self.workers} worker{'s' if self.workers > 1 else ''}"]
        words += [] if self.access_log else ["no access log"]
        return ", ".join(words)


# As `make run` serves, with one and two processes; then without the access log.
CONFIGURATIONS = [
    Configuration(workers=1),
    Configuration(workers=2),
    Configuration(workers=1, access_log=False),
    Configuration(workers=2, access_log=False),
]


@contextlib.contextmanager
def api_server(env: dict[str, str], log: Path, configuration: Configuration) -> Iterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--port", str(port), "app.main:app"]
    if configuration.workers > 1:
        args += ["--workers", str(configuration.workers)]
    if not configuration.access_log:
        args.append("--no-access-log")
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            if time.monotonic() > deadline or popen.poll() is not None:
                raise RuntimeError(f"the API did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(url, psutil.Process(popen.pid))
    finally:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# --- load ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float  # the load generator's own


def generate_load(url: str, key: str, paths: list[str], clients: int, seconds: float) -> LoadResult:
    """Runs in a process of its own: `clients` closed-loop clients, each sending its next
    request as soon as the previous answer arrived, to random `paths` for `seconds`."""
    return asyncio.run(_load(url, key, paths, clients, seconds))


async def _load(url: str, key: str, paths: list[str], clients: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0

    async def client(rng: random.Random, deadline: float, http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while (start := time.perf_counter()) < deadline:
            try:
                async with http.get(rng.choice(paths)) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    async with aiohttp.ClientSession(
        url,
        headers={"Authorization": f"Bearer {key}"},
        connector=aiohttp.TCPConnector(limit=clients),
    ) as http:
        cpu_before = _own_cpu_seconds()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(random.Random(i), deadline, http) for i in range(clients)))
        elapsed = time.perf_counter() - started
        cpu = _own_cpu_seconds() - cpu_before
    return LoadResult(len(latencies) + errors, errors, elapsed, latencies, cpu)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds(database: str) -> float:
    """CPU used so far by the Postgres server processes serving `database` (their process
    titles name it); a connection closed meanwhile takes its share with it."""
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if database in " ".join(process.info["cmdline"] or ()):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def postgres_sessions(engine: Engine) -> int:
    """Connections ever opened to the database, as Postgres counts them."""
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        )


@dataclass
class Run:
    load: LoadResult
    server_cpu: float
    postgres_cpu: float
    busy_cores: float  # every process on the machine, other people's too
    connections_opened: int

    def row(self, label: str) -> str:
        load, seconds = self.load, self.load.seconds
        p50, p90, p99 = np.percentile(load.latencies or [0], [50, 90, 99]) * 1000
        return (
            f"{label:<52} {(load.requests - load.errors) / seconds:>7.0f} {p50:>7.1f} "
            f"{p90:>7.1f} {p99:>7.1f} {load.errors:>6} {self.server_cpu / seconds:>7.2f} "
            f"{self.postgres_cpu / seconds:>7.2f} {load.cpu_seconds / seconds:>7.2f} "
            f"{self.busy_cores:>7.2f} {self.connections_opened:>6}"
        )


RUN_HEADER = (
    f"{'':<52} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6} "
    f"{'server':>7} {'pg':>7} {'loadgen':>7} {'machine':>7} {'pg con':>6}"
)


def measure(
    server: Server,
    engine: Engine,
    database: str,
    key: str,
    paths: list[str],
    clients: int,
    seconds: float,
) -> Run:
    """A load run from a process of its own, and what it cost whom."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pool.submit(int).result()  # the process is started before the clock
        sessions = postgres_sessions(engine)
        server_cpu, postgres_cpu = server.cpu_seconds(), postgres_cpu_seconds(database)
        psutil.cpu_percent()
        load = pool.submit(generate_load, server.url, key, paths, clients, seconds).result()
        busy = psutil.cpu_percent() / 100 * psutil.cpu_count()
        server_cpu = server.cpu_seconds() - server_cpu
        postgres_cpu = postgres_cpu_seconds(database) - postgres_cpu
    time.sleep(1)  # Postgres counts a session when the process serving it reports, soon after
    return Run(load, server_cpu, postgres_cpu, busy, postgres_sessions(engine) - sessions)


def load_section(
    env: dict[str, str],
    root: Path,
    engine: Engine,
    database: str,
    key: str,
    ids: list[str],
    args: argparse.Namespace,
) -> None:
    print(
        f"\n## GET under load: {args.clients} concurrent clients, {args.seconds:.0f} s each"
        f"\nserver, pg, loadgen: CPU cores used on average by uvicorn (all its processes), by"
        f" the Postgres processes serving the database, by the load generator; machine: by"
        f" every process, other people's too, of {psutil.cpu_count()}; pg con: Postgres"
        f" connections opened during the run"
    )
    print(RUN_HEADER)
    job_paths = [f"/v1/jobs/{job_id}" for job_id in ids]
    for number, configuration in enumerate(CONFIGURATIONS):
        with api_server(env, root / f"api-{number}.log", configuration) as server:
            # Warms what a long-running server has warm: connections, the key cache.
            measure(server, engine, database, key, job_paths, args.clients, 2)
            targets = [("GET /v1/jobs/{id}", job_paths)]
            if configuration.access_log:
                targets.insert(0, ("GET /healthz", ["/healthz"]))
            for label, paths in targets:
                run = measure(server, engine, database, key, paths, args.clients, args.seconds)
                print(run.row(f"{label}, {configuration}"))


# --- listing ------------------------------------------------------------------------------


def walk(
    client: httpx.Client, status: str | None = None
) -> tuple[list[float], list[str | None], list[str]]:
    """Every job (of `status`), `PAGE_SIZE` at a time: each page's latency, the cursor that
    asked for it, and the ids in the order they came."""
    latencies: list[float] = []
    cursors: list[str | None] = []
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
        params |= {"status": status} if status else {}
        start = time.perf_counter()
        response = client.get("/v1/jobs", params=params)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        page = response.json()
        cursors.append(cursor)
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return latencies, cursors, seen


def timed(engine: Engine, stmt: Select | str, params: dict | None = None) -> float:
    """The median time of `stmt` executed and fetched, `REPEATS` times."""
    times = []
    with engine.connect() as connection:
        for _ in range(REPEATS):
            start = time.perf_counter()
            if isinstance(stmt, str):
                connection.execute(text(stmt), params).all()
            else:
                connection.execute(stmt).all()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


OFFSET_QUERY = (
    "SELECT * FROM jobs WHERE tenant_id = :tenant ORDER BY created_at DESC, id DESC"
    " LIMIT :limit OFFSET :offset"
)


def explain(engine: Engine, stmt: Select | str, params: dict | None = None) -> list[str]:
    with engine.connect() as connection:
        if isinstance(stmt, str):
            return list(
                connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {stmt}"), params).scalars()
            )
        compiled = stmt.compile(dialect=connection.dialect)
        return list(
            connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", compiled.params)
            .scalars()
            .all()
        )


def listing_section(
    env: dict[str, str], root: Path, key: str, engine: Engine, tenant_id: str, count: int
) -> None:
    with (
        api_server(env, root / "api-listing.log", Configuration()) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client,
    ):
        walk(client)  # warm-up
        walks = [walk(client) for _ in range(REPEATS)]
        _, failed_cursors, failed = walk(client, status="failed")
    latencies = np.median([w[0] for w in walks], axis=0)
    _, cursors, seen = walks[0]
    pages = len(cursors)
    complete = len(seen) == len(set(seen)) == count
    print(
        f"\n## Listing {count} jobs, limit={PAGE_SIZE}, through next_cursor: {pages} pages, "
        f"every job exactly once: {complete}; whole walk {sum(latencies) * 1000:.0f} ms "
        f"(median of {REPEATS} walks)"
    )
    print(f"{'page':>5} {'HTTP keyset ms':>15} {'SQL keyset ms':>14} {'SQL OFFSET ms':>14}")
    for page in SHOWN_PAGES:
        if page > pages:
            break
        keyset = jobs.list_query(tenant_id, None, None, PAGE_SIZE, cursors[page - 1])
        offset = {"tenant": tenant_id, "limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE}
        print(
            f"{page:>5} {latencies[page - 1] * 1000:>15.2f} "
            f"{timed(engine, keyset) * 1000:>14.2f} "
            f"{timed(engine, OFFSET_QUERY, offset) * 1000:>14.2f}"
        )
    deepest = min(SHOWN_PAGES[-1], pages)
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the keyset query for page {deepest}:")
    stmt = jobs.list_query(tenant_id, None, None, PAGE_SIZE, cursors[deepest - 1])
    print("\n".join(f"  {line}" for line in explain(engine, stmt)))
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the OFFSET query for page {deepest}:")
    offset = {"tenant": tenant_id, "limit": PAGE_SIZE, "offset": (deepest - 1) * PAGE_SIZE}
    print("\n".join(f"  {line}" for line in explain(engine, OFFSET_QUERY, offset)))
    print(
        f"\nEXPLAIN (ANALYZE, BUFFERS) of the keyset query for the last of the "
        f"{len(failed_cursors)} pages of `status=failed` ({len(failed)} jobs):"
    )
    stmt = jobs.list_query(tenant_id, "failed", None, PAGE_SIZE, failed_cursors[-1])
    print("\n".join(f"  {line}" for line in explain(engine, stmt)))


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    database = f"tunery_bench_api_{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="tunery-bench-api-"))
    env = {
        **os.environ,
        "TUNERY_DATABASE_URL": postgres_url(database),
        "TUNERY_BROKER_URL": os.environ.get("TUNERY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "TUNERY_QUEUE": f"bench-api-{uuid.uuid4().hex[:8]}",
        "TUNERY_ARTIFACT_DIR": str(root / "artifacts"),
        "TUNERY_CACHE_DIR": str(root / "cache"),
        "TUNERY_RUN_DIR": str(root / "runs"),
        # No worker runs: the reconciler would only re-send the inserted queued jobs to the broker.
        "TUNERY_RECONCILE_INTERVAL_SECONDS": "0",
    }
    create_postgres_database(database)
    engine = make_engine(env["TUNERY_DATABASE_URL"])
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            env=env,
            check=True,
            capture_output=True,
        )
        key = create_tenant_key(env, "--requests-per-minute", "1000000000")
        start = time.perf_counter()
        tenant_id, ids = insert_jobs(engine, key, args.jobs)
        print(
            f"# bench.api: {args.jobs} jobs inserted in {time.perf_counter() - start:.1f} s; "
            f"{psutil.cpu_count()} CPU cores; Postgres {_postgres_version(engine)}; "
            f"logs in {root}"
        )
        load_section(env, root, engine, database, key, ids, args)
        listing_section(env, root, key, engine, tenant_id, args.jobs)
    finally:
        engine.dispose()
        drop_postgres_database(database)


def _postgres_version(engine: Engine) -> str:
    with engine.connect() as connection:
        return connection.scalar(text("SHOW server_version"))


if __name__ == "__main__":
    main()
