"""The Celery app as a publisher sees it: the broker, the queues and the task names, configured
for long training jobs (see docs/WORKER.md for why each setting).

It lives in `app` so that the API publishes jobs without importing the worker; the worker
(`worker.celery_app`) takes this same app and adds its tasks and signal handlers.
"""

from celery import Celery

from app.config import get_settings

RUN_JOB_TASK = "tunery.run_job"
JOIN_GANG_TASK = "tunery.join_gang"  # a worker joins another's job as one of its machines

settings = get_settings()
# Redis redelivers a message not acked within the visibility timeout, even while its job runs:
# the timeout must outlast the longest job. (The embedded SQLAlchemy transport has none.)
transport_options = (
    {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    if settings.broker_url.startswith(("redis", "rediss"))
    else {}
)
celery_app = Celery("tunery", broker=settings.broker_url)
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # A worker started without `-Q` consumes this queue only: CPU jobs, and every job while
    # TUNERY_GPU_QUEUE is unset. GPU machines run `-Q <TUNERY_GPU_QUEUE>`; app.services.dispatch
    # routes each job (docs/WORKER.md, Scale-out). Queues are declared as workers name them.
    task_default_queue=settings.queue,
    task_create_missing_queues=True,
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
