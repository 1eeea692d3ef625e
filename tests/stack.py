"""Starts the real processes for end-to-end tests: a uvicorn API server and a Celery worker."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from tests.servers import free_port


# Under pytest, the run's own servers (tests/servers.py, started by conftest) or those the user
# names; the benchmarks, which use these stacks outside pytest, take the machine's by default,
# or their own when they start them (bench.chaos: `servers.start_unless_named()`, which names
# them in the environment after this module was imported, so the functions below read it then).
def pg_admin() -> str:
    return os.environ.get(
        "TUNERY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def redis_url() -> str:
    return os.environ.get("TUNERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# The addresses as they were when this module was imported: under pytest, the run's own.
PG_ADMIN = pg_admin()
REDIS_URL = redis_url()


def postgres_url(database: str) -> str:
    base = pg_admin().rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def create_postgres_database(name: str) -> None:
    with psycopg.connect(pg_admin(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_postgres_database(name: str) -> None:
    with psycopg.connect(pg_admin(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `tunery admin ...`, the installed command."""
    tunery = Path(sys.executable).parent / "tunery"
    done = subprocess.run([str(tunery), "admin", *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:  # what it said, which a CalledProcessError would hide
        raise RuntimeError(f"tunery admin {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stdout.strip().splitlines()[-1]


def create_tenant_key(env: dict[str, str], *quota_options: str) -> str:
    """A new tenant (with these `--max-...` options) and a key for it, made by the admin CLI."""
    name = f"tenant-{uuid.uuid4().hex[:8]}"
    admin(env, "create-tenant", name, *quota_options)
    return last_line(admin(env, "create-key", "--tenant", name))


def trainer_pids(pattern: str) -> list[int]:
    """The trainer processes whose command line has `pattern` after `trainer.main`: a job's id,
    or a stack's run directory (`TUNERY_RUN_DIR`) for all of its trainers."""
    found = subprocess.run(["pgrep", "-f", f"trainer.main .*{pattern}"], capture_output=True)
    return [int(pid) for pid in found.stdout.split()]


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    root: Path
    processes: list[subprocess.Popen]
    key: str = ""  # the API key of the tenant the tests act as

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def new_key(self, *quota_options: str) -> str:
        return create_tenant_key(self.env, *quota_options)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def start_worker(
        self,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        queues: list[str] | None = None,
    ) -> subprocess.Popen:
        """Another Celery worker process (its log: worker-<n>.log), of these queues (`-Q`) or
        TUNERY_QUEUE."""
        env = {**self.env, **(extra_env or {})}
        args = _worker_args(concurrency) + (["-Q", ",".join(queues)] if queues else [])
        worker = _spawn(args, env, self.root / f"worker-{len(self.processes)}.log")
        self.processes.append(worker)
        return worker

    def restart_api(self) -> None:
        """Kill the API server (-9) and start another on the same port; wait until it is ready."""
        api, port = self.processes[0], self.base_url.rsplit(":", 1)[1]
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        args = ["uvicorn", "app.main:app", "--port", port]
        self.processes[0] = _spawn(args, self.env, self.root / "api-restarted.log")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the API did not become ready:\n{self.logs()}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _worker_args(concurrency: int) -> list[str]:
    return ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
            "-c", str(concurrency)]  # fmt: skip


def start_stack(
    root: Path,
    database_url: str,
    broker_url: str,
    queue: str,
    concurrency: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """Migrate the database, then start the API server and a worker of `concurrency` processes
    (none with 0: a benchmark that brings workers of its own), and wait until the API is ready.
    With several processes each trainer gets one thread."""
    env = {
        **os.environ,
        "TUNERY_DATABASE_URL": database_url,
        "TUNERY_BROKER_URL": broker_url,
        "TUNERY_ARTIFACT_DIR": str(root / "artifacts"),
        "TUNERY_RUN_DIR": str(root / "runs"),
        # The session's cache (tests/conftest.py): what is made once, such as the spoken
        # digits, is made once for every stack.
        "TUNERY_CACHE_DIR": os.environ.get("TUNERY_CACHE_DIR", str(root / "cache")),
        "TUNERY_QUEUE": queue,
        "TUNERY_RECONCILE_INTERVAL_SECONDS": "1",
        "TUNERY_WEBHOOK_POLL_SECONDS": "0.5",
        "TUNERY_MLFLOW_ALLOW": "127.0.0.0/8",  # the MLflow servers tests start (test_mlflow.py)
        "TUNERY_HEARTBEAT_SECONDS": "0.5",
        "TUNERY_STOP_GRACE_SECONDS": "5",
        **(extra_env or {}),
    }
    if concurrency > 1:
        env["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    api = _spawn(["uvicorn", "app.main:app", "--port", str(port)], env, root / "api.log")
    processes = [api]
    if concurrency > 0:
        processes.append(_spawn(_worker_args(concurrency), env, root / "worker.log"))
    stack = Stack(f"http://127.0.0.1:{port}", env, root, processes)
    try:
        # The tenant tests and benchmarks act as: its request rate is no limit on a benchmark.
        stack.key = create_tenant_key(env, "--requests-per-minute", "100000000")
        stack.wait_ready()
    except BaseException:  # the caller gets no stack to stop: nothing started may outlive this
        stack.stop()
        raise
    return stack


@contextmanager
def postgres_redis_stack(
    root: Path, name: str, concurrency: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A stack in the production setup, on a fresh Postgres database (dropped afterwards) and
    a queue of its own on Redis."""
    tag = uuid.uuid4().hex[:8]
    database = f"tunery_{name}_{tag}"
    create_postgres_database(database)
    try:
        stack = start_stack(
            root, postgres_url(database), redis_url(), f"tunery-{name}-{tag}",
            concurrency, extra_env,
        )  # fmt: skip
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        drop_postgres_database(database)
