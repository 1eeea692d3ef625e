"""The Celery app, configured for long training jobs (see docs/WORKER.md for why each setting)."""

from celery import Celery

from app.config import get_settings

RUN_JOB_TASK = "tunery.run_job"

settings = get_settings()
# Redis redelivers a message not acked within the visibility timeout, even while its job runs:
# the timeout must outlast the longest job. (The embedded SQLAlchemy transport has none.)
transport_options = (
    {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    if settings.broker_url.startswith(("redis", "rediss"))
    else {}
)
# `worker.shutdown`: a stopping worker hands its jobs back at a checkpoint.
celery_app = Celery(
    "tunery", broker=settings.broker_url, include=["worker.tasks", "worker.shutdown"]
)
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=settings.queue,
    # The message survives a worker that dies mid-job; the database's attempt counter bounds
    # the redeliveries, and the claim makes a duplicate delivery a no-op.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options=transport_options,
    visibility_timeout=settings.broker_visibility_timeout_seconds,
)
