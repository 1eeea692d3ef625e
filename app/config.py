"""Settings from environment variables prefixed `TUNERY_`; the defaults are the embedded setup."""

import socket
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, IPvAnyNetwork, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trainer.spec import MAX_RUNTIME_SECONDS


class Settings(BaseSettings):
    # populate_by_name: a field with an env alias (below) may still be passed by its name.
    model_config = SettingsConfigDict(env_prefix="TUNERY_", populate_by_name=True)

    database_url: str = "sqlite:///var/tunery.db"
    # kombu's SQLAlchemy transport on SQLite: a broker with no server to install. It is a
    # wake-up signal only; the reconciler below re-sends what it loses.
    broker_url: str = "sqla+sqlite:///var/broker.db"
    artifact_dir: Path = Path("var/artifacts")
    # Where uploaded datasets are kept: `artifact_dir` on this machine, or an S3-compatible
    # bucket (`s3://bucket/prefix`) that workers on other machines share. `s3_endpoint_url`
    # points at a non-AWS server (MinIO, Ceph); credentials come from the usual AWS variables.
    artifact_store_url: str | None = None
    s3_endpoint_url: str | None = None
    # Local copies of stored files for trainers and previews, kept by content hash.
    cache_dir: Path = Path("var/cache")
    # Per-attempt scratch directories for trainers, removed when the attempt ends.
    run_dir: Path = Path("var/runs")
    # The Celery queue of CPU jobs (`resources.device` `auto` or `cpu`), which a worker started
    # without `-Q` consumes; and of every job while `gpu_queue` is unset.
    queue: str = "training"
    # The queue of `cuda` jobs, for workers on GPU machines (`celery ... worker -Q <it>`), so that
    # a CPU-only worker never takes one; its workers' GPU count is unknown, so a job asking for
    # more GPUs than its worker sees fails as it starts. Set it alike on the API and every worker.
    gpu_queue: str | None = None
    # Or queues by size, `1=gpu1,4=gpu4` (GPUs per worker = queue): a `cuda` job goes to the
    # queue of the smallest size of at least its `resources.processes`, and one larger than the
    # largest is refused at submission; a worker consuming a sized queue refuses to start with
    # fewer GPUs (`worker.gpu_count`). Instead of `gpu_queue`; set alike on the API and workers.
    gpu_queues: Annotated[dict[int, str], NoDecode] = {}
    # Log records as JSON lines for a log collector (`json`) or as plain lines for a person
    # reading a terminal (`text`); the API and the workers alike.
    log_format: Literal["json", "text"] = "json"

    # Request bodies are counted as they stream in and refused past these sizes (413).
    max_upload_bytes: int = 2 * 1024**3
    max_request_bytes: int = 16 * 1024**2
    # Zip archives: member count, expanded size and compression ratio (zip-bomb guards); the
    # expanded size also bounds an npz's or a parquet table's decoded size (docs/DATASETS.md).
    max_archive_members: int = 100_000
    max_archive_expanded_bytes: int = 4 * 1024**3
    max_compression_ratio: float = 100.0
    # Text uploads (`.jsonl` of texts) larger than this are checked and trained from as a
    # stream, never whole in memory (docs/DATASETS.md#large-datasets).
    stream_uploads_over_bytes: int = 256 * 1024**2
    # Where datasets registered by reference may be read from: comma-separated S3 prefixes
    # (`s3://corpora/web/,s3://team-data/`), through `s3_endpoint_url` (AWS when unset) with
    # the workers' credentials. None by default: no dataset can be registered by reference.
    dataset_sources: Annotated[list[str], NoDecode] = []
    max_dataset_shards: int = 10_000

    # Weights of the models `predict` and `generate` keep loaded, least recently used out first.
    model_cache_bytes: int = 1024**3

    # Fork single-process trainers from a warm process that has imported torch (a job's first
    # step ~3 s sooner); false: a fresh interpreter each (`worker.trainer_process`).
    trainer_zygote: bool = True

    # A trainer saves a checkpoint this often, and on SIGTERM; a new attempt resumes from it.
    checkpoint_every_steps: int = 200

    # Per-tenant quotas, unless the tenant sets its own (`tunery admin create-tenant --help`).
    tenant_max_running_jobs: int = 4
    tenant_max_queued_jobs: int = 100
    tenant_max_storage_bytes: int = 100 * 1024**3
    tenant_requests_per_minute: int = 6000
    # Where request counts are kept: `memory://` counts per API process; with several API
    # processes point them all at one Redis (`redis://host:6379/1`) so the limit is shared.
    rate_limit_storage_url: str = "memory://"
    # How long an authenticated key is trusted without asking the database: a revoked key
    # stops working within this many seconds.
    auth_cache_seconds: float = 5.0
    # Origins allowed to call the API from a browser; none by default (CORS off).
    cors_origins: list[str] = []

    max_attempts: int = 3
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 1.0
    stop_grace_seconds: float = 10.0
    # The reconciler (app.services.dispatch) brings the broker in line with the database: it
    # re-queues jobs whose lease expired and re-sends queued jobs whose message may be lost.
    # 0 turns it off (for API-only test processes). An alias names the whole variable, so the
    # prefix is written out; TUNERY_SWEEP_INTERVAL_SECONDS is its deprecated former name.
    reconcile_interval_seconds: float = Field(
        10.0,
        validation_alias=AliasChoices(
            "TUNERY_RECONCILE_INTERVAL_SECONDS", "TUNERY_SWEEP_INTERVAL_SECONDS"
        ),
    )
    redispatch_after_seconds: float = 300.0
    # Jobs of several `nodes` (docs/WORKER.md, "One job on several machines"): how long the
    # worker that took one waits for the others to join; after how long (with jitter) it tries
    # again when they did not; and the address by which other machines reach this worker's
    # rendezvous (default: this host's name).
    gang_wait_seconds: float = 60.0
    gang_retry_seconds: float = 30.0
    node_address: str = Field(default_factory=socket.gethostname)
    # Longer than any job may run, so the broker never redelivers a message while its job runs.
    broker_visibility_timeout_seconds: int = MAX_RUNTIME_SECONDS + 6 * 3600

    # Webhooks (docs/WEBHOOKS.md). Address ranges a webhook may reach though they are not public
    # (loopback, private, link-local, ...): comma-separated CIDRs, such as `10.20.0.0/16`; in
    # them plain `http` is allowed too. None by default: webhooks reach only public addresses.
    webhook_allow: Annotated[list[IPvAnyNetwork], NoDecode] = []
    # How often each API process looks for due deliveries; 0 sends none (API-only test
    # processes).
    webhook_poll_seconds: float = 1.0
    # A request's whole time (connect, TLS, answer's status line) is bounded by this.
    webhook_timeout_seconds: float = 5.0
    # Retries wait twice as long each time from the first (plus or minus a fifth, at random),
    # at most the longest, until the delivery is this old; then it has failed.
    webhook_retry_first_seconds: float = 5.0
    webhook_retry_longest_seconds: float = 6 * 3600.0
    webhook_retry_for_seconds: float = 24 * 3600.0
    # Events, with their deliveries and attempts, are forgotten this long after they happened
    # (none still being retried).
    webhook_log_days: float = 30.0
    # MLflow tracking servers a job may name (`integrations`): as for webhooks, public addresses
    # over https, and these ranges (comma-separated CIDRs, `http` too), where a deployment's own
    # tracking server usually is. The worker requests what the job names: without this, a job
    # could have it request the operator's network.
    mlflow_allow: Annotated[list[IPvAnyNetwork], NoDecode] = []

    @field_validator("webhook_allow", "mlflow_allow", "dataset_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gpu_queues", mode="before")
    @classmethod
    def _sized_queues(cls, value: object) -> object:
        """`1=gpu1,4=gpu4` as {1: "gpu1", 4: "gpu4"}; refused, naming the entry, when malformed."""
        if not isinstance(value, str):
            return value
        table: dict[int, str] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            size, equals, queue = (part.strip() for part in entry.partition("="))
            if not (equals and size.isdigit() and int(size) >= 1 and queue):
                raise ValueError(
                    f"TUNERY_GPU_QUEUES: {entry!r} is not GPUS=QUEUE, e.g. 1=gpu1,4=gpu4"
                )
            if int(size) in table:
                raise ValueError(f"TUNERY_GPU_QUEUES: two queues for size {size}")
            table[int(size)] = queue
        return table

    @field_validator("gpu_queues")
    @classmethod
    def _one_routing(cls, table: dict[int, str], info: ValidationInfo) -> dict[int, str]:
        """A queue a size: a worker's queue says how many GPUs it must see. (A field's check, not
        the model's: a model's error would print every setting, the database's password too.)"""
        queues = list(table.values())
        if table and info.data.get("gpu_queue"):
            raise ValueError("set TUNERY_GPU_QUEUES or TUNERY_GPU_QUEUE, not both")
        if len(set(queues)) < len(queues):
            raise ValueError("TUNERY_GPU_QUEUES names one queue for two sizes")
        if info.data.get("queue") in queues:
            raise ValueError("TUNERY_GPU_QUEUES names TUNERY_QUEUE, the queue of CPU jobs")
        return table


@cache
def get_settings() -> Settings:
    return Settings()
