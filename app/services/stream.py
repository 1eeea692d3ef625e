"""A job's live stream: its status, metric points and events as Server-Sent Events.

Trainers write to the database from other processes (and other machines), so the stream reads
what they committed, every `POLL_SECONDS`, rather than listening to one process's memory; the
same code serves Postgres and the embedded SQLite. Each event's id holds two positions, the
last metric point and the last job event sent ("<metric id>-<event id>"), so a client that
reconnects with `Last-Event-ID` gets exactly what it has not seen.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sse_starlette import ServerSentEvent

from app.db import session_scope
from app.models import JobEvent, MetricPoint
from app.problems import InvalidInput
from app.schemas import EventOut, JobOut, MetricPointOut
from app.services import jobs
from app.services.job_state import TERMINAL
from trainer.spec import SpecIssue

POLL_SECONDS = 0.5
BATCH = 1000  # rows of each kind read per poll; a backlog drains over consecutive polls


@dataclass(frozen=True)
class Position:
    metric_id: int = 0
    event_id: int = 0

    @classmethod
    def parse(cls, last_event_id: str | None) -> "Position":
        if not last_event_id:
            return cls()
        metric, _, event = last_event_id.partition("-")
        if not (metric.isdigit() and event.isdigit()):
            message = "not an event id this stream sent (expected '<metric id>-<event id>')"
            raise InvalidInput([SpecIssue("Last-Event-ID", message)])
        return cls(int(metric), int(event))

    def __str__(self) -> str:
        return f"{self.metric_id}-{self.event_id}"


@dataclass
class _Read:
    job: JobOut
    points: list[tuple[int, MetricPointOut]]
    events: list[tuple[int, EventOut]]

    @property
    def drained(self) -> bool:
        return len(self.points) < BATCH and len(self.events) < BATCH


def _read(tenant_id: str, job_id: str, after: Position) -> _Read:
    """The job, then what was written after `after`: read in this order, so a job seen as
    finished has all its points and events in this same read or an earlier one."""
    with session_scope() as session:
        job = jobs.to_out(jobs.get_job(session, tenant_id, job_id))  # the one lookup a poll
        points, _ = jobs.rows_after(session, MetricPoint, job_id, str(after.metric_id), BATCH)
        events, _ = jobs.rows_after(session, JobEvent, job_id, str(after.event_id), BATCH)
        return _Read(
            job,
            [(p.id, MetricPointOut.model_validate(p)) for p in points],
            [(e.id, EventOut.model_validate(e)) for e in events],
        )


def check_job(tenant_id: str, job_id: str) -> None:
    """404 before the stream starts, as for any other route on an unknown (or foreign) job."""
    with session_scope() as session:
        jobs.get_job(session, tenant_id, job_id)


def _progress_of(job: JobOut) -> tuple:
    return job.status, job.progress, job.attempt


async def events(tenant_id: str, job_id: str, after: Position) -> AsyncIterator[ServerSentEvent]:
    """`status` first and whenever status or progress change, `metric` and `log` in the order
    they were written, and `end` once the job is final and everything before it was sent."""
    last_status = None
    while True:
        read = await asyncio.to_thread(_read, tenant_id, job_id, after)
        if _progress_of(read.job) != last_status:
            last_status = _progress_of(read.job)
            yield ServerSentEvent(read.job.model_dump_json(), event="status", id=str(after))
        for row_id, point in read.points:
            after = Position(row_id, after.event_id)
            yield ServerSentEvent(point.model_dump_json(), event="metric", id=str(after))
        for row_id, event in read.events:
            after = Position(after.metric_id, row_id)
            yield ServerSentEvent(event.model_dump_json(), event="log", id=str(after))
        if read.job.status in TERMINAL and read.drained:
            yield ServerSentEvent(read.job.model_dump_json(), event="end", id=str(after))
            return
        if read.drained:
            await asyncio.sleep(POLL_SECONDS)
