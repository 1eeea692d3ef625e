"""Celery tasks. A task only supervises: the training itself runs in a child process."""

import os
import socket

from app.config import get_settings
from worker.celery_app import RUN_JOB_TASK, celery_app
from worker.supervisor import supervise


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    supervise(job_id, get_settings(), owner=f"{socket.gethostname()}:{os.getpid()}")
