"""The Celery app, configured for long training jobs (see docs/WORKER.md for why each setting)."""

import logging
import re
from typing import TYPE_CHECKING

from celery import Celery
from celery.signals import celeryd_after_setup, celeryd_init, setup_logging, worker_process_init

from app.config import get_settings
from app.observability.logs import configure_logging

if TYPE_CHECKING:
    from celery.apps.worker import Worker

RUN_JOB_TASK = "tunery.run_job"
JOB_ID = re.compile(r"\bjob_[0-9a-f]{32}\b")
# The loggers of Celery's records about a task: received, succeeded, failed.
TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")

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


@celeryd_init.connect
def _configure_logging_early(**_: object) -> None:
    """The worker's first signal: its privilege check warns right after it, and that warning
    should be a record like the rest."""
    configure_logging(settings.log_format)


def _job_of_task(record: logging.LogRecord) -> bool:
    """Celery's records about a `run_job` task name the job only inside the task's arguments
    (`data`): its id becomes the `job_id` field, as on the supervisor's own records."""
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("name") == RUN_JOB_TASK:
        found = JOB_ID.search(str(data.get("args", "")))
        if found:
            record.job_id = found.group()
    return True


@setup_logging.connect
def _configure_logging(loglevel: int | None = None, **_: object) -> None:
    """A receiver of this signal stops Celery from replacing the root logger's handlers with
    its own; the worker's `--loglevel` is kept."""
    configure_logging(settings.log_format, loglevel or logging.INFO)
    for name in TASK_LOGGERS:
        logging.getLogger(name).addFilter(_job_of_task)


@celeryd_after_setup.connect
def _banner_as_a_record(sender: str, instance: "Worker", **_: object) -> None:
    """Celery prints its start-up banner (queues, concurrency, transport) straight to stdout,
    the one multi-line block in an otherwise line-per-record log. As JSON, it is logged as a
    record instead, and Celery told not to print it."""
    if settings.log_format == "json":
        banner = instance.startup_info(artlines=False) + (instance.extra_info() or "")
        logging.getLogger(__name__).info("%s starting\n%s", sender, banner)
        instance.quiet = True


@worker_process_init.connect
def _warm_the_trainer_zygote(**_: object) -> None:
    """Each pool process starts its trainers' zygote as it starts, so that its imports are
    done before the first job, not during it."""
    if settings.trainer_zygote:
        from worker import trainer_process

        trainer_process.warm_up()
