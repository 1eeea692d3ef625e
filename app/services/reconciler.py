"""The reconciler: every few seconds, in each API process, it brings the broker and the sweeps
in line with the database. It re-queues running jobs whose worker stopped renewing its lease,
re-sends queued jobs that were never sent or were sent long ago (their message may be lost),
and advances every sweep not yet over (its driver may have died, or a trial ended unseen). It
also forgets webhook events past their log's retention (`app.services.webhooks`)."""

import asyncio
import logging
from datetime import timedelta

from app.config import get_settings
from app.db import session_scope
from app.models import utcnow
from app.services import dispatch, job_state, sweeps, webhooks

log = logging.getLogger(__name__)


def reconcile_once() -> None:
    """Re-queue the jobs whose lease expired, then send queued jobs never sent or sent long ago."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        for job_id in job_state.reap_expired_leases(session, now):
            log.warning("job %s lost its worker; re-queued", job_id, extra={"job_id": job_id})
    sent_before = now - timedelta(seconds=settings.redispatch_after_seconds)
    with session_scope() as session:
        job_ids = job_state.jobs_to_dispatch(session, sent_before)
    if job_ids:
        dispatch.send(job_ids)
    sweeps.advance_all()  # a sweep whose driver died, or whose trial ended unseen
    with session_scope() as session:
        webhooks.forget_old(session, now)


async def reconcile_forever(interval_seconds: float) -> None:
    while True:
        try:
            await asyncio.to_thread(reconcile_once)
        except Exception:
            log.exception("reconciling failed; trying again in %.0f s", interval_seconds)
        await asyncio.sleep(interval_seconds)
