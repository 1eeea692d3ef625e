"""SQLAlchemy models. The schema changes only through Alembic migrations (`migrations/`)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainer.card import ModelCard


def new_id(prefix: str) -> str:
    """Unguessable public ids, typed by prefix: `job_…`, `model_…`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class CardJSON(TypeDecorator):
    """A model card in a JSON column: parsed once, as it is read; its JSON, as it is written."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: ModelCard | None, dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: dict[str, Any] | None, dialect) -> ModelCard | None:
        return None if value is None else ModelCard.model_validate(value)


# SQLite only auto-increments an INTEGER primary key.
RowId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Tenant(Base):
    """Who owns jobs, datasets and models. A quota left null takes the server's default."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    max_running_jobs: Mapped[int | None]
    max_queued_jobs: Mapped[int | None]
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    requests_per_minute: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, kept only as the SHA-256 of its secret: the secret is shown once, at
    creation. Keys are random 256-bit strings, so a fast hash is enough (no password
    stretching: there is nothing to brute-force)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    read_only: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_status_created_at_id", "tenant_id", "status", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # One job per trial: a sweep's driver that retries cannot make a trial twice.
        UniqueConstraint("sweep_id", "trial_number", name="uq_jobs_sweep_trial"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(4000))
    result_model_id: Mapped[str | None] = mapped_column(String(40))
    progress_step: Mapped[int] = mapped_column(default=0)
    progress_epoch: Mapped[int] = mapped_column(default=0)
    progress_total_steps: Mapped[int | None]
    # `attempt` is the fencing token: only the attempt holding the lease may write results.
    attempt: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    # The model a finetune or adapt job starts from: a model in use is not deleted.
    base_model_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # A sweep's trial: the sweep and the trial's number in its Optuna study.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"))
    trial_number: Mapped[int | None]
    # A job made by OpenAI's fine-tuning route: its `metadata` (SQLAlchemy's declarative classes
    # keep that name for themselves) and its `suffix`, part of the result model's name.
    user_metadata: Mapped[dict[str, str] | None] = mapped_column(JSON)
    suffix: Mapped[str | None] = mapped_column(String(64))
    # Set when a running job is asked to pause: its attempt checkpoints, stops and pauses it.
    pause_requested_at: Mapped[datetime | None]
    # A job started from another's checkpoint (`base_checkpoint_id`): that job, its lineage.
    base_checkpoint_job_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Sweep(Base):
    """A hyperparameter search: an Optuna study of the same id (its trials, params and values
    in Optuna's own tables, in this database), whose trials run as jobs.

    `driven_until` is the lease of the one process that may change the study (ask, tell) at a
    time; `dirty` says that something happened while another process held it."""

    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_tenant_created_at_id", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    driven_until: Mapped[datetime | None]
    dirty: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(4000))
    status: Mapped[str | None] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    step: Mapped[int]
    epoch: Mapped[int]
    name: Mapped[str] = mapped_column(String(100))
    split: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime]


class Checkpoint(Base):
    """A checkpoint of a job that its retention policy keeps, in the artifact store at `key`.
    The latest is the one a retry or a resume starts from; any may start a new job
    (`base_checkpoint_id`). `metrics`: the epoch's validation figures, for one taken at an
    epoch's end; empty for one taken between."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    step: Mapped[int]
    epoch: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Gang(Base):
    """The machines gathered for one attempt of a job of several `nodes`: the worker that
    took the job (its leader) and the members that joined it. `forming` until the members
    are in (then `formed`, with the attempt and the leader's rendezvous address); given up
    (deleted) if they are not by `expires_at`: the members leave and the job waits queued."""

    __tablename__ = "gangs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    nodes: Mapped[int]  # the machines wanted, the leader's among them
    state: Mapped[str] = mapped_column(String(16), default="forming")
    leader: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int | None]
    endpoint: Mapped[str | None] = mapped_column(String(300))  # HOST:PORT, the rendezvous
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class GangMember(Base):
    """A worker that joined a gang as one of its machines (`slot` 1, 2, … ; the leader is 0).
    `seen_at` is renewed at each of its heartbeats while it waits and trains: a member not
    seen for a lease is lost, and its leader ends the attempt."""

    __tablename__ = "gang_members"

    gang_id: Mapped[str] = mapped_column(
        ForeignKey("gangs.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    # How its ranks ended: `done` (never counted lost while the leader still saves the
    # model) or `failed` (counted lost at once); None while they run.
    ended: Mapped[str | None] = mapped_column(String(8))


class Model(Base):
    """A trained or imported model. Deleting one removes its files but keeps the row, marked
    `deleted_at`, so that the lineage of its descendants stays whole."""

    __tablename__ = "models"
    __table_args__ = (Index("ix_models_tenant_created_at_id", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # None for imported models.
    source_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    parent_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(32))
    card: Mapped[ModelCard] = mapped_column(CardJSON)
    # The weights' key in the artifact store: `models/<id>/model.safetensors`.
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The datasets it was trained on: name (built-in or upload id) -> sha256 of the upload,
    # or null for a built-in.
    datasets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """An uploaded file, validated and described. Its bytes live in the artifact store under
    `datasets/sha256/<sha256>`: the same bytes uploaded twice are stored once. A dataset
    registered by reference stores nothing: its shards stay where they are (`stream`)."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_created_at_id", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))
    num_examples: Mapped[int] = mapped_column(BigInteger)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    feature_names: Mapped[list[str] | None] = mapped_column(JSON)
    labels: Mapped[list[str]] = mapped_column(JSON)
    # regression: its target columns; forecasting: its series
    targets: Mapped[list[str] | None] = mapped_column(JSON)
    series: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # forecasting: `SeriesOut`
    class_counts: Mapped[dict[str, Any]]
    role_counts: Mapped[dict[str, int] | None] = mapped_column(JSON)  # chat and preference
    token_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # uploaded with a tokenizer
    # Too large to read whole: its shards as they were checked (`StreamOut`); None otherwise.
    stream: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    splits: Mapped[dict[str, Any]]
    label_column: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobDataset(Base):
    """Which datasets a job reads: a dataset in use by a queued or running job is not deleted."""

    __tablename__ = "job_datasets"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class IdempotencyKey(Base):
    """The first answer to a request sent with an `Idempotency-Key`: a replay gets it again.
    Recorded in the transaction that creates the resource, so a key and its resource are
    committed together or not at all."""

    __tablename__ = "idempotency_keys"

    route: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """Where a tenant's events are sent, signed with `secret` (Standard Webhooks: `whsec_`
    and base64). The secret is kept as it is, since each delivery is signed with it; the API
    shows it once, at creation."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_tenant_created_at_id", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """The outbox: an event, written in the transaction of the change it tells of. Its id is
    the `webhook-id` of every delivery of it, retries and redeliveries alike, by which a
    receiver knows a message it has already handled."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]  # the body sent: {type, timestamp, data}
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # for forgetting


class WebhookDelivery(Base):
    """One event to one endpoint: `pending` until an attempt is answered 2xx (`succeeded`) or
    `retry_until` passes (`failed`).

    A sender claims it once `next_attempt_at` has come, unless another's claim holds it
    (`lease_expires_at`): a claim counts an attempt (`attempts`, the fencing token: only the
    claim of that number may record its outcome), so no two senders make an attempt at once,
    and a killed sender's claim lapses with its lease."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_endpoint_created_at_id", "endpoint_id", "created_at", "id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    retry_until: Mapped[datetime]
    last_response_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One request of a delivery, as it went: the answer's status, or why there was none."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    response_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(1000))
    duration_ms: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime]


class RegisteredModel(Base):
    """A name, unique in its tenant, whose numbered versions are the tenant's models; its
    aliases point at one version each and move (`app.services.registry`)."""

    __tablename__ = "registered_models"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_registered_models_tenant_name"),
        Index("ix_registered_models_tenant_created_at_id", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Version `number` of a registered model: one of the tenant's models, registered by an
    API key (`POST .../versions`) or by the job that made it (`register_as`). Numbers count
    from 1 and are never reused; the unique constraint is what keeps two registrations that
    race from taking the same one."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("registered_model_id", "number", name="uq_model_versions_number"),
        UniqueConstraint("registered_model_id", "model_id", name="uq_model_versions_model"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE")
    )
    number: Mapped[int]
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    registered_by_key_id: Mapped[str | None] = mapped_column(String(40))
    registered_by_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A registered model's alias (`production`, `staging`, ...) and the version it points at."""

    __tablename__ = "model_aliases"

    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version_id: Mapped[int] = mapped_column(RowId, ForeignKey("model_versions.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """One move of an alias, kept for good: from a version (null: the alias was made) to a
    version (null: it was deleted), when, and by which API key."""

    __tablename__ = "model_alias_moves"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None]
    to_version: Mapped[int | None]
    key_id: Mapped[str] = mapped_column(String(40))
    time: Mapped[datetime] = mapped_column(default=utcnow)
