"""A job's checkpoints: the rows of those its retention policy keeps, recorded as its trainer
reports them, and read by the API and by the attempts that resume or start from one.

The supervisor puts each checkpoint's file in the artifact store before it records the row,
so that a row always has its file; it deletes the files of the rows a heartbeat drops."""

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import Checkpoint, Job, new_id
from trainer.spec import CheckpointRetention, lower_is_better


def checkpoint_key(job_id: str, attempt: int, file: str) -> str:
    """Each attempt's under its own prefix: an attempt that lost its job, still running for a
    heartbeat, never writes over a file of the attempt that holds the job now."""
    return f"checkpoints/{job_id}/attempt-{attempt}/{file}"


def of_job(session: Session, job_id: str) -> list[Checkpoint]:
    """The job's kept checkpoints, by step; the caller has found the job in its tenant."""
    return list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
    )


def find(session: Session, tenant_id: str, checkpoint_id: str) -> tuple[Checkpoint, Job] | None:
    """A kept checkpoint of one of the tenant's jobs, and its job."""
    found = session.execute(
        select(Checkpoint, Job)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.id == checkpoint_id, Job.tenant_id == tenant_id)
    ).one_or_none()
    return None if found is None else (found[0], found[1])


def latest(session: Session, job_id: str) -> Checkpoint | None:
    """The checkpoint a new attempt at the job resumes from."""
    return session.scalar(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc())
        .limit(1)
    )


def record(
    session: Session,
    job_id: str,
    attempt: int,
    reported: list[dict],
    retention: CheckpointRetention,
) -> list[str]:
    """Record the checkpoints the trainer reported (one saved again at the same step, at an
    epoch's end, replaces the first) and drop those the retention policy no longer keeps;
    the store keys of the dropped ones, for the caller to delete once this commits."""
    if not reported:
        return []
    rows = {row.step: row for row in session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id)
    )}  # fmt: skip
    for event in reported:
        row = rows.get(event["step"])
        if row is None:
            row = rows[event["step"]] = Checkpoint(
                id=new_id("ckpt"), job_id=job_id, step=event["step"]
            )
            session.add(row)
        row.attempt, row.epoch, row.metrics = attempt, event["epoch"], event["metrics"]
        row.size_bytes = event["size_bytes"]
        row.key = checkpoint_key(job_id, attempt, event["file"])
        row.created_at = datetime.fromtimestamp(event["time"], UTC)
    monitor = reported[-1]["monitor"], reported[-1]["mode"] == "min"
    kept = _kept(list(rows.values()), retention, monitor)
    dropped = [row for row in rows.values() if row.step not in kept]
    if dropped:
        session.flush()
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_([r.id for r in dropped])))
    return [row.key for row in dropped]


def _kept(
    rows: list[Checkpoint], retention: CheckpointRetention, monitor: tuple[str, bool]
) -> set[int]:
    """The steps kept: the last `keep_last`, and the best `keep_best` of those taken at an
    epoch's end by the policy's metric (else the monitored one)."""
    by_step = sorted(rows, key=lambda row: row.step)
    kept = {row.step for row in by_step[-retention.keep_last :]}
    metric, lower = (
        (retention.metric, lower_is_better(retention.metric)) if retention.metric else monitor
    )
    scored = [row for row in by_step if metric in row.metrics]
    scored.sort(key=lambda row: row.metrics[metric], reverse=not lower)
    kept.update(row.step for row in scored[: retention.keep_best])
    return kept
