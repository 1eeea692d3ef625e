"""One process of `bench.fleet`'s simulated fleet: many workers as threads, each doing what a
real worker's supervisor does in the database (`worker/supervisor.py`), with a trainer that
only sleeps and reports metric points. Or, with `reconciler` in its plan, the reconciler's
pass (`app.services.reconciler.reconcile_once`), timed at its deployed interval.

A worker thread, for each job its broker message names:
- claims it (`job_state.claim`, and `wait_for_slot` when refused) and reads its inputs
  (`attempts.attempt_inputs`), in two transactions, as `supervisor._prepare` does;
- every `heartbeat_seconds`, stores the "trainer's" pending events and renews the lease in
  one transaction (`attempts.record_heartbeat`): `points_per_heartbeat` metric points and a
  progress event;
- after `job_seconds`, records the outcome (`job_state.succeed` with a model row), reads
  whether the job is over and sends the tenant's jobs waiting for a slot, as
  `supervisor._finish` does.

Each transaction is a session of its own. Its connection comes, as a supervisor's does, from
an engine of the worker's own (`app.db.make_engine`: one connection kept per worker, pinged
before each use), or, with `pool_size`, from one pool the process's workers share: what a
connection pooler such as PgBouncer would give Postgres.

Messages are the real `tunery.run_job` messages the API publishes on Redis, consumed with
kombu by one thread per process that takes a message only when one of its workers is idle
(as `worker_prefetch_multiplier = 1` does), and acked as it is taken rather than when the job
ends (Celery's `task_acks_late`): one Redis command either way, and a bench never redelivers.
One consumer per process instead of one per worker: Redis is not what this bench measures
(its CPU is reported beside the rest).

Run by `bench.fleet`: `python -m bench.fleet_workers PLAN_JSON`, with the stack's environment.
It prints `ready` once its engines are connected, then reads `START_AT STOP_AT` (Unix times)
on stdin, works until STOP_AT and writes what it measured as JSON to the plan's
`results_path`.
"""

import json
import queue
import random
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from kombu import Connection
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import make_engine
from app.models import Model, new_id
from app.services import attempts, dispatch, job_state, reconciler
from trainer.card import ModelCard

CARD = ModelCard(architecture="cnn", input_shape=[1, 28, 28], task="classification", labels=["0"])


@dataclass(frozen=True)
class Plan:
    workers: int
    heartbeat_seconds: float
    job_seconds: float
    points_per_heartbeat: int
    results_path: str
    pool_size: int | None = None  # None: an engine, so a connection, per worker
    reconciler: bool = False  # this process times reconciler passes instead
    # Its deployed interval is 10 s; more often, for more passes to time in a short window.
    reconcile_seconds: float = 2.0
    seed: int = 0


@dataclass
class Measured:
    # (start, seconds) of each committed transaction, by what it was: start is Unix time
    claims: list[tuple[float, float]] = field(default_factory=list)
    refused_claims: int = 0
    inputs: list[tuple[float, float]] = field(default_factory=list)
    heartbeats: list[tuple[float, float]] = field(default_factory=list)
    heartbeat_lateness: list[float] = field(default_factory=list)  # behind its schedule, s
    points: int = 0  # metric points in committed heartbeats
    outcomes: list[tuple[float, float]] = field(default_factory=list)
    passes: list[tuple[float, float]] = field(default_factory=list)  # reconciler passes
    cpu_seconds: float = 0.0  # this process's, over the window
    window: tuple[float, float] = (0.0, 0.0)


class Fleet:
    def __init__(self, plan: Plan, stop_at: float) -> None:
        self.plan, self.stop_at = plan, stop_at
        self.measured = Measured()
        self.lock = threading.Lock()  # over `measured`
        self.idle: queue.Queue[queue.Queue[str]] = queue.Queue()  # inboxes of idle workers
        self.rng = random.Random(plan.seed)

    def running(self) -> bool:
        return time.time() < self.stop_at

    def left(self) -> float:
        return max(0.0, self.stop_at - time.time())

    def consume(self, connection: Connection) -> None:
        """Hand one message at a time to an idle worker, while the window lasts."""
        messages = connection.SimpleQueue(get_settings().queue, no_ack=True)
        while self.running():
            try:
                inbox = self.idle.get(timeout=self.left())
            except queue.Empty:
                return
            while self.running():
                try:
                    message = messages.get(timeout=min(1.0, self.left()))
                except messages.Empty:
                    continue
                args, _kwargs, _embed = message.decode()
                inbox.put(args[0])
                break

    def work(self, engine: Engine, name: str) -> None:
        """Wait (no polling: a fleet of threads polling would cost the client more than its
        heartbeats) for a job, run it, and again, while the window lasts."""
        inbox: queue.Queue[str] = queue.Queue()
        while self.running():
            self.idle.put(inbox)
            try:
                job_id = inbox.get(timeout=self.left())
            except queue.Empty:
                return
            self.run_job(engine, name, job_id)

    def run_job(self, engine: Engine, owner: str, job_id: str) -> None:
        settings, plan = get_settings(), self.plan
        started = time.time()
        with Session(engine, expire_on_commit=False) as session, session.begin():
            n = job_state.claim(session, job_id, owner, settings.lease_seconds)
            if n is None:
                job_state.wait_for_slot(session, job_id)
        claimed = time.time()
        with self.lock:
            if n is None:
                self.measured.refused_claims += 1
                return
            self.measured.claims.append((started, claimed - started))
        inputs = self._timed(engine, "inputs", lambda s: attempts.attempt_inputs(s, job_id))
        # Jobs of slightly different lengths, so that a fleet's ends do not stay in step.
        ends_at = claimed + plan.job_seconds * self.rng.uniform(0.8, 1.2)
        due, step = claimed, 0
        while True:
            due += plan.heartbeat_seconds
            if due > ends_at:
                break
            time.sleep(max(0.0, min(due, self.stop_at) - time.time()))
            if not self.running():
                return
            late = time.time() - due
            events = [_point(step + i) for i in range(plan.points_per_heartbeat)]
            step += plan.points_per_heartbeat
            events.append({"type": "progress", "step": step, "epoch": 0, "total_steps": 10**6})
            heartbeat = self._timed(
                engine,
                "heartbeats",
                lambda s, events=events: attempts.record_heartbeat(
                    s, job_id, n, settings.lease_seconds, events, inputs.spec.checkpoints
                ),
            )
            with self.lock:
                self.measured.heartbeat_lateness.append(late)
                self.measured.points += plan.points_per_heartbeat
            if not heartbeat.lease:
                return
        time.sleep(max(0.0, min(ends_at, self.stop_at) - time.time()))
        if not self.running():
            return
        model = Model(id=new_id("model"), tenant_id=inputs.tenant_id, source_job_id=job_id,
                      architecture="cnn", task="classification", card=CARD, path="bench",
                      sha256="0" * 64, size_bytes=1)  # fmt: skip
        self._timed(
            engine,
            "outcomes",
            lambda s: job_state.succeed(s, job_id, n, model, {"test_accuracy": 0.5}),
        )
        # What `supervisor._finish` reads then: whether the job is over, and the tenant's jobs
        # waiting for the running-job slot this attempt freed.
        with Session(engine) as session, session.begin():
            job_state.is_over(session, job_id)
        with Session(engine) as session, session.begin():
            waiting = job_state.jobs_to_dispatch(session, None, inputs.tenant_id)
        if waiting:
            dispatch.send(waiting)

    def _timed(self, engine: Engine, kind: str, transaction):
        started = time.time()
        with Session(engine, expire_on_commit=False) as session, session.begin():
            result = transaction(session)
        with self.lock:
            getattr(self.measured, kind).append((started, time.time() - started))
        return result

    def reconcile(self) -> None:
        """The reconciler's pass every `reconcile_seconds`, timed, while the window lasts (the
        API's own is off: this is the only one)."""
        while self.running():
            started = time.time()
            reconciler.reconcile_once()
            self.measured.passes.append((started, time.time() - started))
            time.sleep(
                max(0.0, min(started + self.plan.reconcile_seconds, self.stop_at) - time.time())
            )


def _point(step: int) -> dict:
    return {"type": "metric", "step": step, "epoch": 0, "name": "step_loss", "split": "train",
            "value": 1.0 / (step + 1), "time": time.time()}  # fmt: skip


def engines(plan: Plan) -> list[Engine]:
    """The workers' engines, each connection opened now (a fleet's workers are connected
    before it is measured)."""
    url = get_settings().database_url
    if plan.pool_size is None:
        found = [make_engine(url) for _ in range(plan.workers)]
        for engine in found:
            engine.connect().close()  # kept in the engine's pool
        return found
    shared = create_engine(url, pool_pre_ping=True, pool_size=plan.pool_size, max_overflow=0,
                           pool_timeout=600)  # fmt: skip
    opened = [shared.connect() for _ in range(plan.pool_size)]
    for connection in opened:
        connection.close()
    return [shared] * plan.workers


def main() -> None:
    plan = Plan(**json.loads(sys.argv[1]))
    if plan.reconciler:
        reconciler.reconcile_once()  # its imports and connections, before it is timed
    worker_engines = [] if plan.reconciler else engines(plan)
    print("ready", flush=True)
    start_at, stop_at = map(float, sys.stdin.readline().split())
    fleet = Fleet(plan, stop_at)
    host = f"{socket.gethostname()}-fleet-{plan.seed}"
    threads = [
        threading.Thread(target=fleet.work, args=(engine, f"{host}:{i}"), daemon=True)
        for i, engine in enumerate(worker_engines)
    ]
    connection = Connection(get_settings().broker_url)
    if threads:
        threads.append(threading.Thread(target=fleet.consume, args=(connection,), daemon=True))
    time.sleep(max(0.0, start_at - time.time()))
    cpu_at_start = time.process_time()
    for thread in threads:
        thread.start()
    if plan.reconciler:
        fleet.reconcile()
    for thread in threads:
        thread.join()
    fleet.measured.cpu_seconds = time.process_time() - cpu_at_start
    fleet.measured.window = (start_at, time.time())
    with open(plan.results_path, "w") as out:
        json.dump(asdict(fleet.measured), out)


if __name__ == "__main__":
    main()
