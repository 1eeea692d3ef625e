"""The job state machine: each transition is one conditional UPDATE; races resolve in the database.

    queued -> running -> succeeded | failed | cancelled      (terminal states are final)
    running -> queued                                          (a retryable loss, attempts left)
    queued -> cancelled
    running -> pruned                   (a sweep's trial stopped early by its pruner)
    queued -> paused -> queued          (paused and resumed; a paused job may be cancelled)
    running -> paused                   (asked to pause: its trainer checkpoints and stops)

`attempt` is the fencing token: a worker claims a job by incrementing it, and only the attempt
holding the lease may extend the lease or record an outcome.

A job's end (succeeded, failed with no attempt left, cancelled) and its pause write its webhook
event in the transaction of the transition (`webhooks.emit_job`): both are committed or neither.

A claim also takes one of the tenant's running-job slots (its `max_running_jobs` quota). A job
refused for want of a slot stays queued, undispatched, and is sent again when a slot frees.
"""

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.config import get_settings
from app.models import Job, JobEvent, Model, Tenant, utcnow
from app.services import registry, webhooks

TERMINAL = ("succeeded", "failed", "cancelled", "pruned")
ACTIVE = ("queued", "running")
CANCELLABLE = (*ACTIVE, "paused")


def add_event(
    session: Session, job_id: str, attempt: int, type_: str, message: str, status: str | None = None
) -> None:
    session.add(
        JobEvent(job_id=job_id, attempt=attempt, type=type_, message=message[:4000], status=status)
    )


def _has_free_slot():
    """True where the job's tenant runs fewer jobs than its `max_running_jobs` quota."""
    running = aliased(Job)
    used = (
        select(func.count())
        .where(running.tenant_id == Job.tenant_id, running.status == "running")
        .scalar_subquery()
    )
    limit = (
        select(func.coalesce(Tenant.max_running_jobs, get_settings().tenant_max_running_jobs))
        .where(Tenant.id == Job.tenant_id)
        .scalar_subquery()
    )
    return used < limit


def claim(session: Session, job_id: str, owner: str, lease_seconds: float) -> int | None:
    """Start an attempt on a queued job; None when it is not queued, has no attempts left, or
    its tenant has no free running-job slot (then see `wait_for_slot`)."""
    # The tenant's row is locked first, so that concurrent claims count its running jobs one
    # at a time (Postgres; SQLite runs one writer at a time anyway). FOR NO KEY UPDATE: rows
    # that refer to the tenant (a model `succeed` inserts) need not wait behind the claims.
    session.execute(
        select(Tenant.id)
        .where(Tenant.id == select(Job.tenant_id).where(Job.id == job_id).scalar_subquery())
        .with_for_update(key_share=True)
    )
    now = utcnow()
    attempt = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == "queued",
            Job.attempt < Job.max_attempts,
            _has_free_slot(),
        )
        .values(
            status="running",
            attempt=Job.attempt + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
        )
        .returning(Job.attempt)
    ).scalar_one_or_none()
    if attempt is not None:
        add_event(session, job_id, attempt, "status", f"running (attempt {attempt})", "running")
    return attempt


def wait_for_slot(session: Session, job_id: str) -> bool:
    """After a refused claim: a job still claimable waits for a running-job slot of its tenant.
    It is marked undispatched, to be sent when a slot frees. True if it waits."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.attempt < Job.max_attempts)
        .values(dispatched_at=None)
        .returning(Job.attempt)
    ).scalar_one_or_none()
    if result is None:
        return False
    message = "waiting: the tenant runs as many jobs as its max_running_jobs quota allows"
    add_event(session, job_id, result, "log", message)
    return True


def is_over(session: Session, job_id: str) -> bool:
    """No attempt will run the job again: it is terminal (a paused job will be resumed)."""
    return session.get(Job, job_id).status in TERMINAL


def _held(job_id: str, attempt: int):
    return and_(Job.id == job_id, Job.status == "running", Job.attempt == attempt)


class Lease(enum.Enum):
    LOST = "lost"  # the attempt no longer holds the job
    HELD = "held"
    PAUSE = "pause"  # held, and asked to pause

    def __bool__(self) -> bool:
        return self is not Lease.LOST


def renew_lease(
    session: Session, job_id: str, attempt: int, lease_seconds: float, **progress: Any
) -> Lease:
    """Extend the lease and record progress; whether this attempt still holds the job."""
    values = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds), **progress}
    held = session.execute(
        update(Job).where(_held(job_id, attempt)).values(**values).returning(Job.pause_requested_at)
    ).one_or_none()
    if held is None:
        return Lease.LOST
    return Lease.HELD if held.pause_requested_at is None else Lease.PAUSE


def succeed(
    session: Session,
    job_id: str,
    attempt: int,
    model: Model,
    metrics: dict,
    pruned_after: int | None = None,
) -> bool:
    """Record the model as the job's result, if this attempt still holds the job, and register
    it as the next version of its spec's `register_as` in the same transaction; a sweep's
    trial pruned after an epoch, its model kept, ends `pruned`."""
    status = "succeeded" if pruned_after is None else "pruned"
    result = session.execute(
        update(Job)
        .where(_held(job_id, attempt))
        .values(
            status=status,
            result_model_id=model.id,
            metrics=metrics,
            finished_at=utcnow(),
            lease_expires_at=None,
            pause_requested_at=None,  # it ended before it could pause
        )
        .returning(Job.spec)
    )
    spec = result.scalar_one_or_none()
    if spec is None:
        return False
    session.add(model)
    message = (
        f"succeeded: model {model.id}"
        if pruned_after is None
        else f"pruned after epoch {pruned_after}: model {model.id} kept"
    )
    add_event(session, job_id, attempt, "status", message, status)
    name = spec.get("register_as")
    if name is not None and pruned_after is None:
        session.flush()  # the model's row, which its version refers to
        version = registry.register(session, model.tenant_id, name, model, job_id=job_id)
        add_event(
            session, job_id, attempt, "log", f"registered as {name}/versions/{version.number}"
        )
    if pruned_after is None:
        webhooks.emit_job(session, job_id)
    return True


def fail(
    session: Session, job_id: str, attempt: int, error_type: str, message: str, retryable: bool
) -> str | None:
    """End this attempt with an error. A retryable one re-queues the job while attempts remain,
    or pauses it if it was asked to pause (the attempt it stopped is not counted).

    Returns the job's new status, or None when this attempt no longer held the job.
    """
    job = session.execute(
        select(Job).where(_held(job_id, attempt)).with_for_update()
    ).scalar_one_or_none()
    if job is None:
        return None
    job.lease_owner = job.lease_expires_at = None
    if retryable and job.pause_requested_at is not None:
        job.status, job.pause_requested_at = "paused", None
        job.max_attempts += 1
        add_event(session, job_id, attempt, "status", "paused at its last checkpoint", "paused")
        webhooks.emit_job(session, job_id)
        return job.status
    requeue = retryable and job.attempt < job.max_attempts
    job.status = "queued" if requeue else "failed"
    job.error_type, job.error_message = error_type, message[:4000]
    if requeue:
        job.dispatched_at = None
    else:
        job.finished_at = utcnow()
    add_event(
        session, job_id, attempt, "status", f"{job.status}: {error_type}: {message}", job.status
    )
    if not requeue:
        webhooks.emit_job(session, job_id)
    return job.status


def cancel(session: Session, job: Job) -> bool:
    """Cancel a queued, running or paused job; False when it is already terminal.

    A running trainer sees at its next heartbeat that its attempt lost the job, and stops.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(CANCELLABLE))
        .values(
            status="cancelled",
            finished_at=utcnow(),
            lease_expires_at=None,
            pause_requested_at=None,
        )
    )
    if result.rowcount != 1:
        return False
    add_event(session, job.id, job.attempt, "status", "cancelled", "cancelled")
    webhooks.emit_job(session, job.id)
    return True


def pause(session: Session, job: Job) -> bool:
    """Pause a queued job at once; ask a running one to pause, which its attempt does at its
    next heartbeat (checkpoint, stop, `fail` as retryable: paused). False when the job is
    neither, or already asked."""
    queued = session.execute(
        update(Job).where(Job.id == job.id, Job.status == "queued").values(status="paused")
    )
    if queued.rowcount == 1:
        add_event(session, job.id, job.attempt, "status", "paused before it ran", "paused")
        webhooks.emit_job(session, job.id)
        return True
    running = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "running", Job.pause_requested_at.is_(None))
        .values(pause_requested_at=utcnow())
    )
    if running.rowcount == 1:
        message = "asked to pause: the trainer checkpoints and stops"
        add_event(session, job.id, job.attempt, "log", message)
        return True
    return False


def resume(session: Session, job: Job) -> bool:
    """Queue a paused job again, to go on from its last checkpoint; a running job asked to
    pause is no longer asked. False when the job is neither."""
    paused = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "paused")
        .values(status="queued", dispatched_at=None)
    )
    if paused.rowcount == 1:
        add_event(session, job.id, job.attempt, "status", "resumed: queued", "queued")
        return True
    pausing = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "running", Job.pause_requested_at.is_not(None))
        .values(pause_requested_at=None)
    )
    if pausing.rowcount == 1:
        add_event(session, job.id, job.attempt, "log", "resumed before it paused: it runs on")
        return True
    return False


def prune(session: Session, job_id: str, attempt: int, epoch: int) -> bool:
    """End a sweep's trial that its pruner stopped, if this attempt still holds it. Its
    supervisor sees that the attempt lost the job, and stops the trainer, keeping no model."""
    result = session.execute(
        update(Job)
        .where(_held(job_id, attempt))
        .values(status="pruned", finished_at=utcnow(), lease_expires_at=None)
    )
    if result.rowcount != 1:
        return False
    add_event(session, job_id, attempt, "status", f"pruned after epoch {epoch}", "pruned")
    return True


def reap_expired_leases(session: Session, now: datetime) -> list[str]:
    """Running jobs whose worker stopped renewing: re-queue (attempts left) or fail them."""
    expired = session.execute(
        select(Job.id, Job.attempt)
        .where(
            Job.status == "running",
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
        )
        .with_for_update(skip_locked=True)
    ).all()
    requeued = []
    for job_id, attempt in expired:
        status = fail(session, job_id, attempt, "lease_expired", "the worker stopped", True)
        if status == "queued":
            requeued.append(job_id)
    return requeued


def jobs_to_dispatch(
    session: Session, sent_before: datetime | None, tenant_id: str | None = None
) -> list[str]:
    """Queued jobs never sent, or sent before `sent_before` (their message may be lost), of
    tenants with a free running-job slot (of one tenant, if given)."""
    unsent = Job.dispatched_at.is_(None)
    stmt = select(Job.id).where(
        Job.status == "queued",
        unsent if sent_before is None else or_(unsent, Job.dispatched_at < sent_before),
        _has_free_slot(),
    )
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    return list(session.scalars(stmt.order_by(Job.created_at).limit(1000)))


def mark_dispatched(session: Session, job_ids: list[str]) -> None:
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status == "queued")
            .values(dispatched_at=utcnow())
        )
