"""Sending jobs to workers; `app.services.reconciler` makes a lost or failed send harmless.

The database is the source of truth; a broker message only wakes a worker. A job is marked
dispatched after its message is sent. Duplicates are harmless: the worker's claim is a
conditional UPDATE.

A job goes to the queue of the workers that can run it: `cuda` jobs to `TUNERY_GPU_QUEUE` when it
is set, every other job to `TUNERY_QUEUE`.
"""

import logging

from sqlalchemy import select

from app.broker import RUN_JOB_TASK, celery_app
from app.config import get_settings
from app.db import session_scope
from app.models import Job
from app.services import job_state
from trainer.spec import Resources

log = logging.getLogger(__name__)


def queue_for(resources: Resources) -> str:
    """The queue of the workers that can run a job with these `resources`."""
    settings = get_settings()
    if resources.device == "cuda" and settings.gpu_queue:
        return settings.gpu_queue
    return settings.queue


def send(job_ids: list[str]) -> None:
    """Publish one message per job; a job whose send fails stays undispatched for the reconciler."""
    with session_scope() as session:
        rows = session.execute(select(Job.id, Job.spec).where(Job.id.in_(job_ids))).all()
    queues = {
        job_id: queue_for(Resources.model_validate(spec.get("resources", {})))
        for job_id, spec in rows
    }
    sent = []
    for job_id in job_ids:
        try:
            celery_app.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=queues.get(job_id, get_settings().queue),
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
            sent.append(job_id)
        except Exception:
            log.warning(
                "could not send job %s to the broker; the reconciler will retry",
                job_id,
                extra={"job_id": job_id},
            )
    with session_scope() as session:
        job_state.mark_dispatched(session, sent)
