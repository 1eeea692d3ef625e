"""The test run's own PostgreSQL and Redis: `make test` needs no server running beforehand.

`tests/conftest.py` starts them before anything reads their addresses, unless the user names
servers of their own (`TUNERY_TEST_DATABASE_URL`, an admin URL such as
`postgresql://postgres@127.0.0.1:5432/postgres`, and `TUNERY_TEST_REDIS_URL`). Each lives in a
temporary directory and listens on 127.0.0.1 at a free port; the PostgreSQL cluster is made
for this run (`initdb`, trust authentication: nothing else uses it) and runs without fsync.
They die with the test process (PR_SET_PDEATHSIG), are stopped and removed when it exits, and
the chaos tests restart them: no test touches a server it did not start.
"""

import atexit
import ctypes
import glob
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis

START_SECONDS = 60
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server process of this run: started, stopped and restarted on the same port."""

    name: str
    command: list[str]
    directory: Path
    answers: Callable[[], bool]  # whether it accepts connections yet
    user: pwd.struct_passwd | None = None  # who it runs as, when not this process's user
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        log = open(self.directory / f"{self.name}.log", "ab")  # noqa: SIM115 - the child's
        with log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=self._become_child,
            )
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test run's {self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: PostgreSQL ends its sessions; Redis saves nothing)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / f"{self.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _become_child(self) -> None:
        _become(self.user)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _become(user: pwd.struct_passwd | None) -> None:
    """In a child about to exec: run as `user` (before the death signal, which a change of
    user clears)."""
    if user is not None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)


def _postgres_binary(name: str) -> str:
    """Debian keeps the server's programs out of PATH, under its major version."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if found[-1] is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (`make test` installs it)")
    return found[-1]


def _owner() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, its cluster belongs to `postgres`."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def postgres(root: Path, settings: dict[str, str] | None = None) -> tuple[Server, str]:
    """A new cluster in `root`, running; and its admin URL. `settings` override the run's
    (later `-c` options win): a benchmark may want more connections, or durable commits."""
    user, port = _owner(), free_port()
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    initdb = [_postgres_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]  # fmt: skip
    made = subprocess.run(initdb, capture_output=True, text=True, preexec_fn=lambda: _become(user))
    if made.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{made.stdout}{made.stderr}")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def answers() -> bool:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return True
        except psycopg.OperationalError:
            return False

    command = [_postgres_binary("postgres"), "-D", str(data), "-p", str(port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
               "-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off"]  # fmt: skip
    for name, value in (settings or {}).items():
        command += ["-c", f"{name}={value}"]
    server = Server("postgres", command, root, answers, user)
    server.start()
    return server, url


def redis_server(root: Path) -> tuple[Server, str]:
    """A Redis in `root` that keeps nothing on disk, running; and its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--appendonly", "no", "--dir", str(root)]  # fmt: skip
    server = Server("redis", command, root, answers)
    server.start()
    return server, url


# The servers this run started (none where the user named their own).
STARTED: dict[str, Server] = {}


def start_unless_named(postgres_settings: dict[str, str] | None = None) -> None:
    """Start what the environment does not name, and point the environment at it; a PostgreSQL
    started here takes `postgres_settings` (see `postgres`)."""
    if os.environ.get("TUNERY_TEST_DATABASE_URL") and os.environ.get("TUNERY_TEST_REDIS_URL"):
        return
    root = Path(tempfile.mkdtemp(prefix="tunery-test-servers-"))
    os.chmod(root, 0o755)  # the postgres user reaches its directory inside
    atexit.register(_clean_up, os.getpid(), root)
    if not os.environ.get("TUNERY_TEST_DATABASE_URL"):
        STARTED["postgres"], os.environ["TUNERY_TEST_DATABASE_URL"] = postgres(
            root / "postgres", postgres_settings
        )
    if not os.environ.get("TUNERY_TEST_REDIS_URL"):
        STARTED["redis"], os.environ["TUNERY_TEST_REDIS_URL"] = redis_server(root / "redis")


def _clean_up(owner: int, root: Path) -> None:
    """Stop the servers and remove their directory, in the process that started them only
    (a forked child that exits must leave them running)."""
    if os.getpid() != owner:
        return
    for server in STARTED.values():
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def archive_server(archive: bytes, root: Path) -> Iterator[str]:
    """A model archive's own `serve.py`, run from its unpacked files by a Python that imports
    nothing of this checkout (`-I`, no TUNERY_ settings): its base URL once it answers."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        z.extractall(root)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNERY_")}
    server = subprocess.Popen(
        [sys.executable, "-I", str(root / "serve.py"), "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        server.kill()
        server.wait()


S3_CREDENTIALS = {  # moto accepts any; the service and boto3 read them from the environment
    "AWS_ACCESS_KEY_ID": "tunery-test",
    "AWS_SECRET_ACCESS_KEY": "tunery-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(log_path: Path) -> Iterator[str]:
    """A moto S3 server in its own process until the block ends; its endpoint URL."""
    port = free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **S3_CREDENTIALS},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(endpoint, timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield endpoint
        finally:
            server.kill()
            server.wait()
