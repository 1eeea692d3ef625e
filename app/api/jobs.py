import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Header, Query
from sse_starlette import EventSourceResponse

from app.deps import CallerDep, IdempotencyKeyHeader, ReadEngineDep, SessionDep
from app.schemas import CheckpointOut, EventOut, JobOut, JobStatus, MetricPointOut, Page
from app.services import dispatch, idempotency, jobs, stream
from trainer.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Kind = Literal["pretrain", "finetune", "adapt"]


@router.post("", status_code=201)
def create_job(
    spec: Annotated[JobSpec, Body()],
    session: SessionDep,
    caller: CallerDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    response, created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/jobs",
        idempotency_key,
        idempotency.fingerprint(spec.model_dump(mode="json")),
        lambda: jobs.to_out(jobs.create_job(session, caller.tenant_id, spec)),
    )
    session.commit()  # committed before it is sent: a worker must find the job it is woken for
    if created:
        background.add_task(dispatch.send, [response["id"]])
    return JobOut.model_validate(response)


# The reads are async through and through (`app.db.make_read_engine`): no trip to the thread
# pool, where the sync session's work and the trip cost twice the CPU of the whole read.
@router.get("")
async def list_jobs(
    caller: CallerDep,
    reads: ReadEngineDep,
    status: JobStatus | None = None,
    kind: Kind | None = None,
    limit: Limit = 20,
    cursor: str | None = None,
) -> Page[JobOut]:
    return await jobs.read_jobs_page(reads, caller.tenant_id, status, kind, limit, cursor)


@router.get("/{job_id}")
async def get_job(job_id: str, caller: CallerDep, reads: ReadEngineDep) -> JobOut:
    return await jobs.read_job(reads, caller.tenant_id, job_id)


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    return jobs.to_out(jobs.cancel_job(session, caller.tenant_id, job_id))


@router.post("/{job_id}/pause")
def pause_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    """A queued job pauses at once; a running one checkpoints and stops at its next heartbeat
    (`pause_requested` until then), holding no worker while `paused`."""
    return jobs.to_out(jobs.pause_job(session, caller.tenant_id, job_id))


@router.post("/{job_id}/resume")
def resume_job(
    job_id: str, session: SessionDep, caller: CallerDep, background: BackgroundTasks
) -> JobOut:
    """A paused job is queued again and goes on from its last checkpoint."""
    job = jobs.to_out(jobs.resume_job(session, caller.tenant_id, job_id))
    session.commit()  # committed before it is sent, as a new job is
    if job.status == "queued":
        background.add_task(dispatch.send, [job.id])
    return job


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job_id: str, session: SessionDep, caller: CallerDep) -> Page[CheckpointOut]:
    """The checkpoints its retention policy keeps (`checkpoints` in its spec), by step: one
    page, as the policy bounds how many there are."""
    rows = jobs.job_checkpoints(session, caller.tenant_id, job_id)
    return Page(data=[CheckpointOut.model_validate(row) for row in rows], next_cursor=None)


@router.get("/{job_id}/metrics")
def job_metrics(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 1000,
    cursor: str | None = None,
) -> Page[MetricPointOut]:
    rows, next_cursor = jobs.job_metrics(session, caller.tenant_id, job_id, cursor, limit)
    return Page(data=[MetricPointOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{job_id}/events")
def job_events(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 1000,
    cursor: str | None = None,
) -> Page[EventOut]:
    rows, next_cursor = jobs.job_events(session, caller.tenant_id, job_id, cursor, limit)
    return Page(data=[EventOut.model_validate(r) for r in rows], next_cursor=next_cursor)


STREAM_DESCRIPTION = """Server-Sent Events: `status` (a Job, first and on every change of status
or progress), `metric` (a metric point), `log` (a job event), then `end` (the final Job) before
the server closes. Each event's id resumes the stream when sent back as `Last-Event-ID`."""


@router.get(
    "/{job_id}/stream",
    description=STREAM_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_job(
    job_id: str,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    after = stream.Position.parse(last_event_id)
    await asyncio.to_thread(stream.check_job, caller.tenant_id, job_id)
    # The ping (a comment line) keeps proxies from closing a quiet stream.
    return EventSourceResponse(stream.events(caller.tenant_id, job_id, after), ping=15)
