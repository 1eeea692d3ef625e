"""Metric ingest: 10 concurrent jobs each reporting over 100 metric points a second.

Each phase starts a service on Postgres and Redis whose worker runs 10 trainers at once (one
torch thread each) and submits 10 identical jobs: the MLP (its default hidden layers of 128
and 64) on builtin:digits, batch 16, so that each job trains over 50 steps/s while all 10 run. With
ingest on the jobs ask for `log_every_steps: 1`: every step reports its loss and learning rate
(`step_loss`, `learning_rate`), two points a step, over 100 a second per job, through the real
path (the trainer's event sink, its pipe, the supervisor, heartbeat batches, Postgres). With
ingest off the same jobs report their per-epoch figures only: four points an epoch. Phases
alternate (off, on, off, on, ...).

Each phase shows (a) whether every point a trainer sent is in the database (two per step, the
job's own step count), how many arrived per second per job, and how stale the newest stored
point was while the jobs ran; (b) the jobs' own training speed: steps/s of each job, from its
epoch timestamps, over the window in which all 10 were training, summed over the 10. Where the
difference goes: the CPU time of the trainers per step, and of the supervisors and Postgres,
each over the whole phase.

Run: `.venv/bin/python -m bench.ingest` (about 6 minutes on 2 cores).
"""

import argparse
import sys
import threading
from dataclasses import dataclass
from statistics import median

import psycopg

from bench.timing import (
    EpochEnd,
    Row,
    cpu_seconds,
    machine,
    percentile,
    postgres_redis_stack,
    psycopg_url,
    service_processes,
    submit,
    table,
    wait_succeeded,
)
from tests.stack import Stack
from trainer.heads import HEADS

STEP_METRICS = ("step_loss", "learning_rate")  # what `log_every_steps` reports, each step
RATE_TARGET = 100.0  # points/s per job
# A classifier's per-epoch points: the training loss and its validation figures (loss,
# accuracy, macro-F1); then, once, its test figures.
EPOCH_POINTS = 1 + len(HEADS["classification"].validation_metrics)
TEST_POINTS = len(HEADS["classification"].validation_metrics) - 1
SPEED_TARGET = 0.95
BATCH_SIZE = 16  # over 50 steps/s per job with 10 at once on 2 cores


def spec(epochs: int, log_every_step: bool) -> dict:
    hyperparameters = {"epochs": epochs, "batch_size": BATCH_SIZE}
    return {
        "kind": "finetune",
        "name": "ingest",
        "model": {"architecture": "mlp"},
        "data": {"train": "builtin:digits"},
        "hyperparameters": hyperparameters | ({"log_every_steps": 1} if log_every_step else {}),
        "resources": {"device": "cpu"},
    }


def ingest_env(jobs: int) -> dict[str, str]:
    """The environment of a service whose tenant may run `jobs` jobs at once."""
    return {"TUNERY_TENANT_MAX_RUNNING_JOBS": str(jobs)}


@dataclass
class Phase:
    logs_steps: bool  # the jobs report every step's loss and learning rate
    window_s: float  # all jobs training at once
    step_rates: list[float]  # per job, in the window
    sent: list[int]  # per job: per-step points reported (two a step; 0 with ingest off)
    stored: list[int]  # per job: per-step points in the database
    delivered_per_s: list[float]  # per job: points in the database per second of its run
    pace: list[float]  # per job: delivered_per_s over the points it reported per second of
    # training (1 when stored as fast as trained; the machine's load moves both alike)
    epoch_points_ok: bool  # every job's per-epoch points are all there
    ages_s: list[float]  # in the window, the newest stored per-step point's age, sampled
    cpu_s: dict[str, float]  # CPU seconds by role (trainer, worker, postgres, api), whole phase
    steps: int  # trained by all jobs together

    @property
    def trainer_cpu_ms_per_step(self) -> float:
        return self.cpu_s["trainer"] / self.steps * 1000

    @property
    def total_steps_per_s(self) -> float:
        return sum(self.step_rates)


@dataclass(frozen=True)
class Stored:
    """What the database holds of one job."""

    epoch_ends: list[EpochEnd]  # its per-epoch training-loss points, in time order
    epoch_points: int  # its per-epoch points (train loss, validation, test)
    step_points: int  # its per-step points
    step_points_span_s: float  # between the first and the last of them

    @property
    def delivered_per_s(self) -> float:
        if not self.step_points_span_s:
            return 0.0
        return (self.step_points - 1) / self.step_points_span_s

    @property
    def steps_per_s(self) -> float:
        """Its training speed between its first and its last epoch's end."""
        first, last = self.epoch_ends[0], self.epoch_ends[-1]
        return (last.step - first.step) / (last.time - first.time)


def _stored(url: str, job_id: str) -> Stored:
    with psycopg.connect(url) as connection:
        per_epoch = connection.execute(
            "SELECT name, split, step, extract(epoch FROM time)::float FROM job_metrics "
            "WHERE job_id = %s AND name <> ALL(%s)",
            (job_id, list(STEP_METRICS)),
        ).fetchall()
        count, span = connection.execute(
            "SELECT count(*), extract(epoch FROM max(time) - min(time))::float FROM job_metrics "
            "WHERE job_id = %s AND name = ANY(%s)",
            (job_id, list(STEP_METRICS)),
        ).fetchone()
    ends = [
        EpochEnd(when, step)
        for name, split, step, when in per_epoch
        if (name, split) == ("loss", "train")
    ]
    return Stored(sorted(ends, key=lambda end: end.time), len(per_epoch), count, span or 0.0)


def _sample_ages(url: str, ages: list[tuple[float, float]], stop: threading.Event) -> None:
    """(when, age) of the newest stored point, when a per-step one, every half second: how
    long after a trainer reports a point it can be read."""
    with psycopg.connect(url, autocommit=True) as connection:
        while not stop.wait(0.5):
            # The newest row by its key: an index lookup, so that sampling costs Postgres
            # next to nothing however many points are stored.
            newest = connection.execute(
                "SELECT extract(epoch FROM now()), extract(epoch FROM now() - time), name "
                "FROM job_metrics ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if newest is not None and newest[2] in STEP_METRICS:
                ages.append((float(newest[0]), float(newest[1])))


def _window_step_rates(ends_by_job: list[list]) -> tuple[float, float, list[float]]:
    """The window in which every job was training, and each job's steps/s in it."""
    start = max(ends[0].time for ends in ends_by_job)
    stop = min(ends[-1].time for ends in ends_by_job)
    rates = []
    for ends in ends_by_job:
        inside = [end for end in ends if start <= end.time <= stop]
        if len(inside) < 2:
            raise RuntimeError("the jobs hardly overlapped: give them more --epochs")
        rates.append((inside[-1].step - inside[0].step) / (inside[-1].time - inside[0].time))
    return start, stop, rates


def _cpu_by_pid(stack: Stack) -> dict[tuple[int, str], float]:
    """CPU seconds by (pid, role) of the service's processes; the trainers' under role
    "trainer" once reaped, as the CPU time of their parents' (the supervisors') children."""
    found = {}
    for pid, process in service_processes(stack).items():
        own, reaped = cpu_seconds(pid), cpu_seconds(pid, reaped_children=True)
        if process.role != "trainer" and own is not None and reaped is not None:
            found[pid, process.role] = own
            if process.role == "worker":
                found[pid, "trainer"] = reaped
    return found


def _cpu_spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds by role between two snapshots; a process started in between (a Postgres
    backend for a new connection) counts whole."""
    spent: dict[str, float] = {}
    for (pid, role), cpu in after.items():
        spent[role] = spent.get(role, 0.0) + cpu - before.get((pid, role), 0.0)
    return spent


def warm_up(stack: Stack, jobs: int) -> None:
    """One short job for each of the worker's processes: each forks its trainers from a zygote
    that imports torch as the worker starts, and 10 of them importing at once on 2 cores would
    start the measured jobs up to half a minute apart."""
    with stack.client() as client:
        for job_id in [submit(client, spec(1, False)) for _ in range(jobs)]:
            wait_succeeded(client, job_id)


def run_phase(stack: Stack, logs_steps: bool, jobs: int, epochs: int) -> Phase:
    """Run `jobs` jobs at once on `stack` (started with `ingest_env(jobs)`), reporting every
    step's loss and learning rate if `logs_steps`, and measure them."""
    warm_up(stack, jobs)
    url = psycopg_url(stack)
    ages: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_ages, args=(url, ages, stop))
    sampler.start()
    try:
        with stack.client() as client:
            cpu_before = _cpu_by_pid(stack)
            ids = [submit(client, spec(epochs, logs_steps)) for _ in range(jobs)]
            for job_id in ids:
                wait_succeeded(client, job_id)
            cpu = _cpu_spent(cpu_before, _cpu_by_pid(stack))
    finally:
        stop.set()
        sampler.join()
    stored = [_stored(url, job_id) for job_id in ids]
    start, end, rates = _window_step_rates([job.epoch_ends for job in stored])
    steps = [job.epoch_ends[-1].step for job in stored]  # each job's own count
    return Phase(
        logs_steps,
        end - start,
        rates,
        [len(STEP_METRICS) * n if logs_steps else 0 for n in steps],
        [job.step_points for job in stored],
        [job.delivered_per_s for job in stored],
        [job.delivered_per_s / (len(STEP_METRICS) * job.steps_per_s) for job in stored],
        all(job.epoch_points == EPOCH_POINTS * epochs + TEST_POINTS for job in stored),
        [age for when, age in ages if start <= when <= end],
        cpu,
        sum(steps),
    )


def measure(jobs: int, epochs: int, rounds: int) -> tuple[list[Phase], list[Phase]]:
    """Phases with ingest off and on, alternating, `rounds` of each."""
    off, on = [], []
    for round_ in range(1, rounds + 1):
        for logs_steps, phases in ((False, off), (True, on)):
            with postgres_redis_stack(concurrency=jobs, extra_env=ingest_env(jobs)) as stack:
                phases.append(run_phase(stack, logs_steps, jobs, epochs))
            phase = phases[-1]
            print(
                f"round {round_}, ingest {'on' if logs_steps else 'off'}: "
                f"{phase.total_steps_per_s:,.0f} steps/s over {phase.window_s:.0f} s, "
                f"slowest job {min(phase.delivered_per_s):.0f} points/s",
                file=sys.stderr,
            )
    return off, on


def report(off: list[Phase], on: list[Phase], jobs: int) -> str:
    speed_on = median([p.total_steps_per_s for p in on])
    speed_off = median([p.total_steps_per_s for p in off])
    delivered = [r for p in on for r in p.delivered_per_s]
    sent, stored = sum(sum(p.sent) for p in on), sum(sum(p.stored) for p in on)
    ages = [a for p in on for a in p.ages_s]
    rows = [
        Row(
            f"{jobs} jobs' steps/s, summed (median of {len(on)} phases)",
            f"{speed_on:,.0f}",
            f"{speed_off:,.0f} (per-epoch metrics only)",
            f"{speed_on / speed_off:.3f}",
            f"≥ {SPEED_TARGET}",
            speed_on / speed_off >= SPEED_TARGET,
        ),
        Row(
            "metric points stored per second per job (slowest job)",
            f"{min(delivered):.1f}",
            target=f"≥ {RATE_TARGET:.0f}",
            passed=min(delivered) >= RATE_TARGET,
        ),
        Row(
            "per-step points in the database / reported (2 a step, by each job's step count)",
            f"{stored:,} / {sent:,}",
            target="all",
            passed=all(p.stored == p.sent for p in on),
        ),
        Row(
            "per-epoch points all in the database (every job, both modes)",
            "yes" if all(p.epoch_points_ok for p in on + off) else "no",
            target="all",
            passed=all(p.epoch_points_ok for p in on + off),
        ),
        Row(
            "age of the newest stored point while ingesting, p50 / p90 / max",
            f"{median(ages):.2f} / {percentile(ages, 90):.2f} / {max(ages):.2f} s"
            if ages
            else "not sampled: the window was shorter than a sample",
        ),
    ]
    trainer_on = median([p.trainer_cpu_ms_per_step for p in on])
    trainer_off = median([p.trainer_cpu_ms_per_step for p in off])
    rows.append(
        Row(
            "trainers' CPU per step (start-up included)",
            f"{trainer_on:.2f} ms",
            f"{trainer_off:.2f} ms",
            f"{trainer_on / trainer_off:.3f}",
        )
    )
    for role, label in (("worker", "supervisors (Celery and its pool)"), ("postgres", "Postgres")):
        on_cpu = median([p.cpu_s.get(role, 0.0) for p in on])
        off_cpu = median([p.cpu_s.get(role, 0.0) for p in off])
        rows.append(Row(f"CPU of the {label} per phase", f"{on_cpu:.1f} s", f"{off_cpu:.1f} s"))
    services = [sum(v for k, v in p.cpu_s.items() if k != "trainer") for p in on]
    services_off = [sum(v for k, v in p.cpu_s.items() if k != "trainer") for p in off]
    extra = median(services) - median(services_off)
    rows.append(
        Row(
            "the service's CPU for ingest (API, supervisors, Postgres; on - off), per 1,000 points",
            f"{extra / (sent / len(on) / 1000) * 1000:.0f} ms",
        )
    )
    details = [
        f"- {'on ' if p.logs_steps else 'off'}: {p.total_steps_per_s:,.0f} steps/s "
        f"over a {p.window_s:.1f} s window (per job {min(p.step_rates):.0f}"
        f"-{max(p.step_rates):.0f})"
        + (
            f", {min(p.delivered_per_s):.0f}-{max(p.delivered_per_s):.0f} points/s"
            if p.logs_steps
            else ""
        )
        for pair in zip(off, on, strict=True)
        for p in pair
    ]
    return "\n".join([table(rows), "", "Per phase, in the order run:", *details])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="concurrent jobs")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each job (79 steps)")
    parser.add_argument("--rounds", type=int, default=3, help="phases of each mode")
    args = parser.parse_args()
    print(f"# bench.ingest: {machine()}")
    off, on = measure(args.jobs, args.epochs, args.rounds)
    print(report(off, on, args.jobs))


if __name__ == "__main__":
    main()
