"""Submitting, listing and cancelling jobs; reading their metrics and events."""

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import read
from app.models import Checkpoint, Job, JobEvent, MetricPoint, new_id
from app.problems import Conflict, InvalidInput, NotFound
from app.schemas import JobError, JobOut, Page, Progress
from app.services import checkpoints, datasets, dispatch, job_state, pagination, registry, tenants
from app.services.outbound_addresses import ForbiddenAddress, reachable
from trainer.spec import AdaptSpec, FinetuneSpec, PretrainSpec, SpecIssue
from trainer.validation import check_spec, example_issues

JobSpecType = PretrainSpec | FinetuneSpec | AdaptSpec


# What a job started from a checkpoint keeps of the checkpoint's job: what shapes its weights.
KEPT_FROM_CHECKPOINT = ("kind", "model", "base_model_id", "method")


def _checkpoint_issues(session: Session, tenant_id: str, spec: JobSpecType) -> list[SpecIssue]:
    found = checkpoints.find(session, tenant_id, spec.base_checkpoint_id)
    if found is None:
        return [SpecIssue("base_checkpoint_id", f"no checkpoint {spec.base_checkpoint_id!r}")]
    source = found[1].spec
    ours = spec.model_dump(mode="json")
    for name in KEPT_FROM_CHECKPOINT:
        if ours.get(name) != source.get(name):
            return [
                SpecIssue(
                    "base_checkpoint_id",
                    f"the checkpoint's job has another `{name}` ({source.get(name)!r}); a job "
                    f"started from a checkpoint keeps its {', '.join(KEPT_FROM_CHECKPOINT)}",
                )
            ]
    return []


def _integration_issues(spec: JobSpecType) -> list[SpecIssue]:
    """A tracking server the worker may reach: public, or in the operator's allowed ranges."""
    issues = []
    for i, integration in enumerate(spec.integrations):
        try:
            reachable(integration.tracking_uri, get_settings().mlflow_allow)
        except ForbiddenAddress as error:
            issues.append(
                SpecIssue(f"integrations.{i}.tracking_uri", f"{error} (TUNERY_MLFLOW_ALLOW)")
            )
    return issues


def _resources_issues(spec: JobSpecType) -> list[SpecIssue]:
    """Workers that can run it: a `cuda` job of more processes than the largest GPU workers
    have could never run."""
    reason = dispatch.unroutable(spec.resources)
    return [SpecIssue("resources.processes", reason)] if reason else []


def _checkpoint_job_id(session: Session, tenant_id: str, checkpoint_id: str | None) -> str | None:
    found = checkpoint_id and checkpoints.find(session, tenant_id, checkpoint_id)
    return found[1].id if found else None


def spec_issues(session: Session, tenant_id: str, spec: JobSpecType) -> list[SpecIssue]:
    """What is wrong with the spec against the registries and the tenant's models and
    datasets; [] when it can run."""
    issues = _resources_issues(spec) + _integration_issues(spec)
    if issues:
        return issues
    if spec.base_checkpoint_id is not None:
        issues = _checkpoint_issues(session, tenant_id, spec)
        if issues:
            return issues
    base_card = None
    base_model_id = getattr(spec, "base_model_id", None)
    if base_model_id is not None:
        base = registry.find_model(session, tenant_id, base_model_id)
        if base is None:
            return [SpecIssue("base_model_id", f"no model {base_model_id!r}")]
        base_card = base.card
    issues = check_spec(spec, base_card, datasets.describer(session, tenant_id))
    if issues:
        return issues
    return example_issues(spec, base_card, datasets.numbered_examples(session, tenant_id))


def with_base_resolved(session: Session, tenant_id: str, spec: JobSpecType) -> JobSpecType:
    """The spec with its `base_model_id` the id of the model it names, when it names a
    registered version (`name@alias`, `name/versions/N`): the job starts from that model
    whatever the alias points at later. Unchanged when it names none (`spec_issues` says so)."""
    reference = getattr(spec, "base_model_id", None)
    if reference is None or registry.parse(reference) is None:
        return spec
    base = registry.find_model(session, tenant_id, reference)
    return spec if base is None else spec.model_copy(update={"base_model_id": base.id})


def create_job(
    session: Session,
    tenant_id: str,
    spec: JobSpecType,
    sweep_id: str | None = None,
    trial_number: int | None = None,
) -> Job:
    """Validate the spec, check the tenant's quota, then record the job as queued (a sweep's
    trial with its sweep and trial number). A base model named by a registered version is
    recorded by its id, and the reference in a log event of the job's."""
    reference = getattr(spec, "base_model_id", None)
    spec = with_base_resolved(session, tenant_id, spec)
    issues = spec_issues(session, tenant_id, spec)
    if issues:
        raise InvalidInput(issues)
    tenants.check_job_quota(session, tenant_id)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=spec.kind,
        name=spec.name,
        status="queued",
        spec=spec.model_dump(mode="json"),
        max_attempts=get_settings().max_attempts,
        base_model_id=getattr(spec, "base_model_id", None),
        base_checkpoint_job_id=_checkpoint_job_id(session, tenant_id, spec.base_checkpoint_id),
        sweep_id=sweep_id,
        trial_number=trial_number,
    )
    session.add(job)
    session.flush()
    datasets.record_job_datasets(session, job.id, spec.data)
    job_state.add_event(session, job.id, 0, "status", "queued", "queued")
    if reference != job.base_model_id:
        message = f"base_model_id {reference} is model {job.base_model_id}"
        job_state.add_event(session, job.id, 0, "log", message)
    return job


# Composed once: composing it anew for each request cost a quarter of a job read's CPU.
_JOB_OF_TENANT = select(Job).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")
)


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = session.scalar(_JOB_OF_TENANT, {"job_id": job_id, "tenant_id": tenant_id})
    if job is None:
        raise NotFound("job", job_id)
    return job


def list_query(
    tenant_id: str, status: str | None, kind: str | None, limit: int, cursor: str | None
) -> Select:
    """The statement of one page of the tenant's jobs, newest first."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    return pagination.page_query(stmt, Job, limit, cursor)


async def read_job(engine: AsyncEngine, tenant_id: str, job_id: str) -> JobOut:
    """`GET /v1/jobs/{id}`: one SELECT by primary key and tenant."""
    key = {"job_id": job_id, "tenant_id": tenant_id}
    job = await read(engine, lambda session: session.scalar(_JOB_OF_TENANT, key))
    if job is None:
        raise NotFound("job", job_id)
    return to_out(job)


async def read_jobs_page(
    engine: AsyncEngine,
    tenant_id: str,
    status: str | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> Page[JobOut]:
    """`GET /v1/jobs`: one SELECT."""
    query = list_query(tenant_id, status, kind, limit, cursor)

    async def rows(session: AsyncSession) -> list[Job]:
        return list(await session.scalars(query))

    jobs_page, next_cursor = pagination.page_of(await read(engine, rows), limit)
    return Page(data=[to_out(job) for job in jobs_page], next_cursor=next_cursor)


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = get_job(session, tenant_id, job_id)
    if not job_state.cancel(session, job):
        raise Conflict(
            f"job {job_id} is already {job.status}; only queued, running or paused jobs cancel"
        )
    session.refresh(job)
    return job


def job_checkpoints(session: Session, tenant_id: str, job_id: str) -> list[Checkpoint]:
    get_job(session, tenant_id, job_id)
    return checkpoints.of_job(session, job_id)


def pause_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Pause a queued job, or ask a running one to pause; a paused job stays as it is."""
    job = get_job(session, tenant_id, job_id)
    if job.status != "paused" and not job_state.pause(session, job):
        session.refresh(job)
        if job.status not in ("paused", "running"):  # running: already asked to pause
            raise Conflict(f"job {job_id} is {job.status}; only queued or running jobs pause")
    session.refresh(job)
    return job


def resume_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Queue a paused job again (the caller sends it), or take back a pause not yet made."""
    job = get_job(session, tenant_id, job_id)
    if not job_state.resume(session, job):
        raise Conflict(f"job {job_id} is {job.status}; only a paused job resumes")
    session.refresh(job)
    return job


def rows_after(session: Session, entity, job_id: str, cursor: str | None, limit: int):
    """Rows of a job's log table (its metrics or events) in the order they were written,
    `limit` after `cursor`; the caller has already found the job in its tenant."""
    stmt = select(entity).where(entity.job_id == job_id)
    if cursor is not None:
        # ASCII digits that fit a 64-bit id ("²" is a digit to `isdigit`, not to `int`).
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise InvalidInput([SpecIssue("cursor", "not a cursor this API returned")])
        stmt = stmt.where(entity.id > int(cursor))
    rows = list(session.scalars(stmt.order_by(entity.id).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def job_metrics(session: Session, tenant_id: str, job_id: str, cursor: str | None, limit: int):
    get_job(session, tenant_id, job_id)
    return rows_after(session, MetricPoint, job_id, cursor, limit)


def job_events(session: Session, tenant_id: str, job_id: str, cursor: str | None, limit: int):
    get_job(session, tenant_id, job_id)
    return rows_after(session, JobEvent, job_id, cursor, limit)


def to_out(job: Job) -> JobOut:
    error = None
    if job.status == "failed" and job.error_type is not None:
        error = JobError(type=job.error_type, message=job.error_message or "")
    return JobOut(
        id=job.id,
        kind=job.kind,
        name=job.name,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        error=error,
        result_model_id=job.result_model_id,
        metrics=job.metrics,
        progress=Progress(
            step=job.progress_step, epoch=job.progress_epoch, total_steps=job.progress_total_steps
        ),
        spec=job.spec,
        sweep_id=job.sweep_id,
        trial_number=job.trial_number,
        pause_requested=job.pause_requested_at is not None,
        base_checkpoint_job_id=job.base_checkpoint_job_id,
    )
