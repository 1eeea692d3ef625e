"""Celery tasks. A task only supervises: the training itself runs in a child process."""

import os
import socket

from celery.exceptions import Reject

from app.broker import JOIN_GANG_TASK
from app.config import Settings, get_settings
from worker import gang_member
from worker.celery_app import RUN_JOB_TASK, celery_app
from worker.shutdown import stopping_mark
from worker.supervisor import supervise


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    settings = get_settings()
    if _stopping(settings):
        raise Reject("this worker is stopping; the job is for another", requeue=True)
    supervise(job_id, settings, _owner(), lambda: _stopping(settings))


@celery_app.task(name=JOIN_GANG_TASK)
def join_gang(gang_id: str) -> None:
    """Become one of the machines of another worker's job of several nodes."""
    settings = get_settings()
    if not _stopping(settings):  # a stopping worker joins nothing: the leader's wait ends
        gang_member.serve(gang_id, settings, _owner(), lambda: _stopping(settings))


def _stopping(settings: Settings) -> bool:
    """Whether this worker's main process, the pool process's parent, is stopping."""
    return stopping_mark(settings.run_dir, os.getppid()).exists()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
