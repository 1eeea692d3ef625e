"""Sending jobs to workers; `app.services.reconciler` makes a lost or failed send harmless.

The database is the source of truth; a broker message only wakes a worker. A job is marked
dispatched after its message is sent. Duplicates are harmless: the worker's claim is a
conditional UPDATE.

A job goes to the queue of the workers that can run it: `cuda` jobs to the GPU workers' queue
(by size, `TUNERY_GPU_QUEUES`, or `TUNERY_GPU_QUEUE` of any size) when there is one, every other
job to `TUNERY_QUEUE`. Re-queues (retries, resumes, the reconciler's re-sends) come through
`send` too, so they are routed alike.
"""

import logging

from sqlalchemy import select

from app.broker import JOIN_GANG_TASK, RUN_JOB_TASK, celery_app
from app.config import get_settings
from app.db import session_scope
from app.models import Job
from app.services import job_state
from trainer.spec import Resources

log = logging.getLogger(__name__)
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}


def queue_for(resources: Resources) -> str:
    """The queue of the workers that can run a job with these `resources`: for a `cuda` job
    with sized queues, that of the smallest workers with a GPU for each of its processes."""
    settings = get_settings()
    if resources.device != "cuda":
        return settings.queue
    if settings.gpu_queues:
        sizes = sorted(settings.gpu_queues)
        fitting = [size for size in sizes if size >= resources.processes]
        # None fits only a job submitted before the table shrank (submission refuses it): the
        # largest workers' trainer says why it cannot run (`device_unavailable`).
        return settings.gpu_queues[fitting[0] if fitting else sizes[-1]]
    return settings.gpu_queue or settings.queue


def unroutable(resources: Resources) -> str | None:
    """Why no worker of the configured queues can ever run a job with these `resources`; None
    when one can."""
    sizes = get_settings().gpu_queues
    if resources.device == "cuda" and sizes and resources.processes > max(sizes):
        return (
            f"{resources.processes} processes on cuda take a GPU each; the largest GPU workers "
            f"have {max(sizes)} (TUNERY_GPU_QUEUES)"
        )
    return None


def gather(gang_id: str, resources: Resources, workers: int, within_seconds: float) -> None:
    """Ask `workers` idle workers of the job's queue to join its gang. A message not taken
    within the gang's wait is dropped unread (`expires`): the gang is gone by then."""
    for _ in range(workers):
        celery_app.send_task(
            JOIN_GANG_TASK,
            args=[gang_id],
            queue=queue_for(resources),
            expires=within_seconds,
            retry_policy=RETRY_POLICY,
        )


def send(job_ids: list[str], countdown: float | None = None) -> None:
    """Publish one message per job (to be run `countdown` seconds from now, if given); a job
    whose send fails stays undispatched for the reconciler."""
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
                countdown=countdown,
                retry_policy=RETRY_POLICY,
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
