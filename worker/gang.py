"""The leader's side of a job on several machines (`resources.nodes`): gather the gang before
the job is claimed, give the attempt its rendezvous, and notice a member that is gone.

Every machine runs `trainer.launch` with torchrun's c10d rendezvous at the leader (its store
hosted by the leader's launcher), the rendezvous id being the job id and attempt; the
members' side is `worker.gang_member`.
"""

import logging
import random
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import session_scope
from app.models import Job, utcnow
from app.services import dispatch, gangs
from trainer.spec import Resources

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


@dataclass
class Gathered:
    """A gang whose members are in, for its leader to claim the job and start."""

    id: str
    nodes: int  # the machines that will train: the leader and the members that joined
    resources: Resources


def resources_of(job_id: str) -> Resources:
    with session_scope() as session:
        job = session.get(Job, job_id)
        spec = job.spec if job is not None else {}  # unknown: its claim says so
    try:
        return Resources.model_validate(spec.get("resources", {}))
    except ValidationError:  # no longer valid: the attempt's own reading of it fails the job
        return Resources()


def gather(job_id: str, resources: Resources, settings: Settings, owner: str) -> Gathered | None:
    """Open a gang for the queued job and wait for `nodes - 1` workers of its queue to join
    (an elastic job goes on with `min_nodes` once the wait is over). None when the job is not
    this worker's to lead, or the gang did not form: then it waits queued, with an event
    saying why, and is sent again after `gang_retry_seconds` (with jitter, so that two jobs
    that each hold a worker do not keep waiting for each other in step)."""
    wait = settings.gang_wait_seconds
    with session_scope() as session:
        gang_id = gangs.open_gang(session, job_id, resources.nodes, owner, wait)
    if gang_id is None:
        return None
    deadline = time.monotonic() + wait  # no later than the gang's `expires_at`
    wanted = resources.nodes - 1
    enough = resources.elastic.min_nodes - 1 if resources.elastic else wanted
    dispatch.gather(gang_id, resources, wanted, wait)
    while True:
        with session_scope() as session:
            joined = gangs.joined(session, gang_id)
        closing = time.monotonic() > deadline - 2 * POLL_SECONDS
        if joined >= wanted or (closing and joined >= enough):
            with session_scope() as session:
                machines = gangs.take(session, gang_id, settings.lease_seconds)
            if machines is not None:
                log.info("job %s: %d machines gathered", job_id, machines, extra={"job_id": job_id})
                return Gathered(gang_id, machines, resources)
            break
        if closing:
            break
        time.sleep(POLL_SECONDS)
    queue = dispatch.queue_for(resources)
    why = (
        f"waiting for {resources.nodes} machines: {joined} of the {wanted} other workers of "
        f"queue {queue!r} it needs joined within {wait:g} s; trying again"
    )
    with session_scope() as session:
        gangs.abandon(session, gang_id, why)
    log.info("job %s: %s", job_id, why, extra={"job_id": job_id})
    dispatch.send([job_id], countdown=settings.gang_retry_seconds * random.uniform(1, 1.5))
    return None


def disband(gathered: Gathered) -> None:
    """The job could not be claimed after all (cancelled, paused, no slot): members leave."""
    with session_scope() as session:
        gangs.abandon(session, gathered.id)


class CannotStart(Exception):
    """The gang was gathered but cannot start this attempt: its members gave up waiting, or
    this machine has no rendezvous to offer them (`TUNERY_NODE_ADDRESS`)."""


def start(gathered: Gathered, job_id: str, attempt: int, settings: Settings) -> list[str]:
    """Tell the members which attempt they train and where to meet; the leader's own
    `trainer.launch` arguments."""
    try:
        endpoint = f"{settings.node_address}:{_free_port(settings.node_address)}"
    except OSError as error:
        disband(gathered)
        raise CannotStart(f"no rendezvous at TUNERY_NODE_ADDRESS={settings.node_address!r}: "
                          f"{error}") from error  # fmt: skip
    with session_scope() as session:
        started = gangs.formed(session, gathered.id, attempt, endpoint)
    if not started:
        disband(gathered)
        raise CannotStart("the other machines gave up waiting for this one to start")
    return launch_args(gathered.nodes, gathered.resources, job_id, attempt, endpoint, settings)


def launch_args(
    nodes: int, resources: Resources, job_id: str, attempt: int, endpoint: str, settings: Settings
) -> list[str]:
    """`trainer.launch`'s arguments for one machine of the attempt (the leader adds
    `--leader`). An elastic job may go down to `min_nodes` machines, re-formed up to
    `max_restarts` times; the most is the gang gathered."""
    elastic = resources.elastic
    return [
        "--nnodes",
        f"{elastic.min_nodes}:{nodes}" if elastic else str(nodes),
        "--max-restarts",
        str(elastic.max_restarts if elastic else 0),
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        f"{job_id}-{attempt}",
        "--local-addr",
        settings.node_address,
    ]


def lost_members(gang_id: str, settings: Settings) -> list[int]:
    """The members that left or have not reported for a lease: their machine, or their
    worker, is gone, and the attempt with it (the lease covers the whole gang). None known
    while the database cannot be reached: the heartbeat's own retries cover that."""
    since = utcnow() - timedelta(seconds=settings.lease_seconds)
    try:
        with session_scope() as session:
            return gangs.lost_members(session, gang_id, since)
    except DBAPIError:
        return []


def _free_port(address: str) -> int:
    """A port free now on this machine, for the rendezvous store that the leader's launcher
    starts a moment later."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]
