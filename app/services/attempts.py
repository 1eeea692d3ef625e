"""What an attempt at a job reads and writes in the database: what it needs to start its
trainer, and at each heartbeat the lease renewed with the trainer's events stored."""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models import Dataset, Job, JobDataset, MetricPoint, Model, Sweep
from app.services import checkpoints, job_state
from app.services.datasets import LABELLED_TASKS, dataset_stream, head_task, storage_key
from app.services.model_files import model_file
from app.storage import get_store
from app.sweep_spec import SweepSpec
from trainer.data import dataset_names
from trainer.run_request import DatasetFile
from trainer.spec import CheckpointRetention, JobSpec
from trainer.streaming import DatasetStream

METRIC_COLUMNS = ("job_id", "attempt", "step", "epoch", "name", "split", "value", "time")


@dataclass(frozen=True)
class AttemptInputs:
    tenant_id: str
    spec: JobSpec
    base_model_path: Path | None
    # The job's uploaded datasets as its trainer reads them: local copies of their files.
    datasets: dict[str, DatasetFile]
    # Those too large to read whole, as its trainer streams them (`trainer.streaming`).
    streams: dict[str, DatasetStream]
    # What the model is trained on: dataset name -> sha256 of the upload (None: built-in).
    trained_on: dict[str, str | None]
    # A sweep's trial: its sweep, and the (metric, split) it reports to the sweep's pruner.
    sweep_id: str | None
    objective: tuple[str, str] | None
    # Store keys: the job's latest checkpoint (to resume from), and the one its spec's
    # `base_checkpoint_id` names (to start from).
    latest_checkpoint_key: str | None
    start_checkpoint_key: str | None


@dataclass(frozen=True)
class Heartbeat:
    lease: job_state.Lease
    dropped_checkpoint_keys: list[str]  # the files to delete, now that their rows are gone


def attempt_inputs(session: Session, job_id: str) -> AttemptInputs:
    """The job's spec, base model and datasets, each looked up within the job's tenant."""
    job = session.get(Job, job_id)
    tenant_id = job.tenant_id
    spec = TypeAdapter(JobSpec).validate_python(job.spec)
    base_id = getattr(spec, "base_model_id", None)
    # Checked at submission; scoped again here so a trainer never reads another tenant's.
    base = session.scalar(
        select(Model).where(Model.id == base_id, Model.tenant_id == tenant_id)
    ) if base_id else None  # fmt: skip
    uploads = session.scalars(
        select(Dataset).join(JobDataset, JobDataset.dataset_id == Dataset.id)
        .where(JobDataset.job_id == job_id, Dataset.tenant_id == tenant_id)
    ).all()  # fmt: skip
    # The trainer reads each file, and the base model's, from a local copy (fetched once).
    datasets = {
        row.id: DatasetFile(
            path=get_store().local_path(storage_key(row.sha256)).resolve(),
            format=row.format,
            labelled=row.task in LABELLED_TASKS,
            label_column=row.label_column or "label",
            task=head_task(row.task),
            time_column=row.series and row.series["time_column"],
        )
        for row in uploads
        if row.stream is None
    }
    streams = {row.id: dataset_stream(row) for row in uploads if row.stream is not None}
    sha256_of = {row.id: row.sha256 for row in uploads}
    latest = checkpoints.latest(session, job_id)
    return AttemptInputs(
        tenant_id=tenant_id,
        spec=spec,
        base_model_path=model_file(base).resolve() if base else None,
        datasets=datasets,
        streams=streams,
        trained_on={name: sha256_of.get(name) for name in sorted(dataset_names(spec.data))},
        sweep_id=job.sweep_id,
        objective=sweep_objective(session, job.sweep_id) if job.sweep_id else None,
        latest_checkpoint_key=latest.key if latest else None,
        # Once it has checkpoints of its own, it resumes from them: the one it started from
        # may be gone by then.
        start_checkpoint_key=None
        if latest
        else _start_checkpoint_key(session, tenant_id, spec.base_checkpoint_id),
    )


def _start_checkpoint_key(
    session: Session, tenant_id: str, checkpoint_id: str | None
) -> str | None:
    """Checked at submission; the checkpoint may have been dropped since by its job's policy."""
    if checkpoint_id is None:
        return None
    found = checkpoints.find(session, tenant_id, checkpoint_id)
    if found is None:
        raise CheckpointGone(checkpoint_id)
    return found[0].key


class CheckpointGone(Exception):
    """The checkpoint a job starts from is no longer kept: the job cannot run."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(
            f"base_checkpoint_id {checkpoint_id!r} is no longer kept: its job's retention "
            "policy dropped it after this job was submitted"
        )


def sweep_objective(session: Session, sweep_id: str) -> tuple[str, str]:
    objective = SweepSpec.model_validate(session.get(Sweep, sweep_id).spec).objective
    return objective.metric, objective.split


def record_heartbeat(
    session: Session,
    job_id: str,
    attempt: int,
    lease_seconds: float,
    events: list[dict],
    retention: CheckpointRetention,
) -> Heartbeat:
    """Renew the lease and, while it is held, store the trainer's events (metric points, log
    lines, progress, checkpoints kept by `retention`) in the same transaction. A database
    error is raised as SQLAlchemy's `DBAPIError`, for the caller to retry."""
    points, logs, progress, saved = [], [], {}, []
    for event in events:
        if event["type"] == "metric":
            when = datetime.fromtimestamp(event["time"], UTC)
            fields = tuple(event[k] for k in ("step", "epoch", "name", "split", "value"))
            points.append((job_id, attempt, *fields, when))
        elif event["type"] == "log":
            logs.append(event["message"])
        elif event["type"] == "progress":
            progress = {
                "progress_step": event["step"],
                "progress_epoch": event["epoch"],
                "progress_total_steps": event["total_steps"],
            }
        elif event["type"] == "checkpoint":
            saved.append(event)
    lease = job_state.renew_lease(session, job_id, attempt, lease_seconds, **progress)
    if not lease:
        return Heartbeat(lease, [])
    _insert_points(session, points)
    for message in logs:
        job_state.add_event(session, job_id, attempt, "log", message)
    return Heartbeat(lease, checkpoints.record(session, job_id, attempt, saved, retention))


def _insert_points(session: Session, points: list[tuple]) -> None:
    """Metric points, which a trainer may report at every step (`log_every_steps`), go in
    with one `COPY` on Postgres, one multi-row INSERT on SQLite: not as ORM objects, which
    cost 5 times the CPU of COPY (docs/PERFORMANCE.md, Metric ingest)."""
    if not points:
        return
    connection = session.connection()
    if connection.dialect.driver == "psycopg":
        # On the session's own connection, so in its transaction.
        copy_sql = f"COPY job_metrics ({', '.join(METRIC_COLUMNS)}) FROM STDIN"
        dbapi_error = connection.dialect.loaded_dbapi.Error
        try:
            with (
                connection.connection.driver_connection.cursor() as cursor,
                cursor.copy(copy_sql) as copy,
            ):
                for point in points:
                    copy.write_row(point)
        except dbapi_error as error:  # raised as SQLAlchemy would: the caller retries
            raise DBAPIError.instance(copy_sql, None, error, dbapi_error) from error
    else:
        rows = [dict(zip(METRIC_COLUMNS, point, strict=True)) for point in points]
        session.execute(insert(MetricPoint), rows)
