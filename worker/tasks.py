"""Celery tasks. A task only supervises: the training itself runs in a child process."""

import os
import socket

from celery.exceptions import Reject

from app.config import get_settings
from worker.celery_app import RUN_JOB_TASK, celery_app
from worker.shutdown import stopping_mark
from worker.supervisor import supervise


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    settings = get_settings()
    if stopping_mark(settings.run_dir, os.getppid()).exists():  # the parent: the main process
        raise Reject("this worker is stopping; the job is for another", requeue=True)
    supervise(job_id, settings, owner=f"{socket.gethostname()}:{os.getpid()}")
