"""The worker side of the Celery app (`celery -A worker.celery_app worker`): the broker's app of
`app.broker` with the tasks, the log set-up and the trainer zygote's warm-up."""

import logging
import os
import re
import signal
from typing import TYPE_CHECKING

from celery.signals import celeryd_after_setup, celeryd_init, setup_logging, worker_process_init

from app.broker import RUN_JOB_TASK, celery_app, settings
from app.observability.logs import configure_logging
from worker.gpu_count import too_few_gpus

if TYPE_CHECKING:
    from celery.apps.worker import Worker

JOB_ID = re.compile(r"\bjob_[0-9a-f]{32}\b")
# The loggers of Celery's records about a task: received, succeeded, failed.
TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")

# `worker.shutdown`: a stopping worker hands its jobs back at a checkpoint.
celery_app.conf.include = ["worker.tasks", "worker.shutdown"]


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
def _refuse_too_few_gpus(sender: str, instance: "Worker", **_: object) -> None:
    """A worker of a sized GPU queue stops before it consumes, when it sees fewer GPUs than the
    queue's jobs may ask for. (After set-up: `-Q` has chosen the queues it consumes.)"""
    problem = too_few_gpus(instance.app.amqp.queues.consume_from, settings.gpu_queues)
    if problem:
        logging.getLogger(__name__).critical("%s refuses to start: %s", sender, problem)
        # Celery's signals log a receiver's Exception and go on; SystemExit stops the worker
        # with this status.
        raise SystemExit(os.EX_CONFIG)


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
def _leave_stopping_to_the_main_process(**_: object) -> None:
    """A pool process ignores SIGTERM: stopping is the main process's (its warm shutdown hands
    the jobs back, `worker.shutdown`, then ends each pool process in turn; Celery has them
    killed if the main process dies). A SIGTERM sent to the whole group at once (systemd's
    KillMode=control-group, `kill -- -PGID`) would otherwise kill a pool process as it waits
    for a task holding the pool's queue lock, and the main process, exiting, would wait for
    that lock forever (billiard's `Pool._help_stuff_finish`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@worker_process_init.connect
def _warm_the_trainer_zygote(**_: object) -> None:
    """Each pool process starts its trainers' zygote as it starts, so that its imports are
    done before the first job, not during it."""
    if settings.trainer_zygote:
        from worker import trainer_process

        trainer_process.warm_up()
