"""Gangs: the machines gathered for one attempt of a job of several `nodes`, all or none.

The worker that takes such a job leads: it opens a gang (`open_gang`) while the job is still
queued, asks the job's queue for `nodes - 1` more workers (`tunery.join_gang` messages), and
waits for them to `join`. Once they are in, it `take`s the gang (no more joins), claims the job
as any worker does and marks the gang `formed` with the attempt and its rendezvous address;
each member then runs its ranks of that attempt. If they are not in by `expires_at` the
leader `abandon`s the gang, deleting it (a job may wait through many): the members leave, the
job stays queued with an event saying why, and the leader sends it again later. Each step is
one conditional statement; the job's own lease and fencing (`job_state`) cover the attempt
once it runs, and members' `seen_at` tell its leader they are still there.
"""

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Gang, GangMember, Job, JobEvent, new_id, utcnow
from app.services import job_state


def open_gang(
    session: Session, job_id: str, nodes: int, leader: str, wait_seconds: float
) -> str | None:
    """Open a gang for a queued job; None when the job is not queued, or another worker is
    gathering one for it (a duplicate delivery)."""
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one()
    if job.status != "queued" or job.attempt >= job.max_attempts:
        return None
    now = utcnow()
    gathering = session.scalar(
        select(func.count())
        .select_from(Gang)
        .where(Gang.job_id == job_id, Gang.state == "forming", Gang.expires_at > now)
    )
    if gathering:
        return None
    gang = Gang(
        id=new_id("gang"),
        job_id=job_id,
        nodes=nodes,
        leader=leader,
        expires_at=now + timedelta(seconds=wait_seconds),
    )
    session.add(gang)
    return gang.id


def join(session: Session, gang_id: str, owner: str) -> int | None:
    """Join a forming gang as its next machine; the slot taken, or None when the gang is full,
    formed, abandoned or past its wait."""
    gang = session.execute(
        select(Gang).where(Gang.id == gang_id).with_for_update()
    ).scalar_one_or_none()
    if gang is None or gang.state != "forming" or gang.expires_at <= utcnow():
        return None
    joined = session.scalar(select(func.count()).where(GangMember.gang_id == gang_id))
    if joined >= gang.nodes - 1:
        return None
    try:
        with session.begin_nested():
            session.add(GangMember(gang_id=gang_id, slot=joined + 1, owner=owner))
    except IntegrityError:  # another took that slot at the same moment (SQLite: no row lock)
        return None
    return joined + 1


def joined(session: Session, gang_id: str) -> int:
    return session.scalar(select(func.count()).where(GangMember.gang_id == gang_id))


def take(session: Session, gang_id: str, start_within_seconds: float) -> int | None:
    """The leader takes the gang as it is (all in, or enough for an elastic job) before its
    wait is over: no one joins after, and the members wait `start_within_seconds` more for it
    to claim the job and start. The machines it has; None when its wait was over first (the
    members may have left)."""
    now = utcnow()
    taken = session.execute(
        update(Gang)
        .where(Gang.id == gang_id, Gang.state == "forming", Gang.expires_at > now)
        .values(state="starting", expires_at=now + timedelta(seconds=start_within_seconds))
    )
    return joined(session, gang_id) + 1 if taken.rowcount == 1 else None


def formed(session: Session, gang_id: str, attempt: int, endpoint: str) -> bool:
    """The leader claimed the job for `attempt`: the members start, meeting at `endpoint`.
    False when they gave up waiting for it first."""
    started = session.execute(
        update(Gang)
        .where(Gang.id == gang_id, Gang.state == "starting", Gang.expires_at > utcnow())
        .values(state="formed", attempt=attempt, endpoint=endpoint)
    )
    return started.rowcount == 1


def abandon(session: Session, gang_id: str, why: str | None = None) -> None:
    """Give the gang up: its rows go (a job may wait through many), and members waiting for
    it leave. `why`: the job waits for this reason, said once in its events however often it
    is tried again."""
    gang = session.get(Gang, gang_id)
    if gang is None:
        return
    job_id = gang.job_id
    session.execute(delete(GangMember).where(GangMember.gang_id == gang_id))
    session.delete(gang)
    if why is None:
        return
    last = session.scalar(
        select(JobEvent.message)
        .where(JobEvent.job_id == job_id)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    if last != why:
        attempt = session.scalar(select(Job.attempt).where(Job.id == job_id))
        job_state.add_event(session, job_id, attempt, "log", why)


class GangGone(Exception):
    """The gang was given up, or its wait is over with no leader left to give it up."""


def formed_gang(session: Session, gang_id: str, slot: int) -> Gang | None:
    """For a member waiting: the gang once its leader has claimed the job, None while it is
    still forming (the member is seen meanwhile); `GangGone` when it will not form."""
    gang = session.get(Gang, gang_id)
    if gang is None or (gang.state != "formed" and gang.expires_at <= utcnow()):
        raise GangGone(gang_id)
    if gang.state == "formed":
        return gang
    seen(session, gang_id, slot)
    return None


def seen(session: Session, gang_id: str, slot: int) -> None:
    session.execute(
        update(GangMember)
        .where(GangMember.gang_id == gang_id, GangMember.slot == slot)
        .values(seen_at=utcnow())
    )


def end(session: Session, gang_id: str, slot: int, failed: bool) -> None:
    """A member's ranks ended: if `failed` (killed, or failed on their own) its leader
    counts it lost at once, not a lease later; if not, never."""
    session.execute(
        update(GangMember)
        .where(GangMember.gang_id == gang_id, GangMember.slot == slot)
        .values(ended="failed" if failed else "done")
    )


def lost_members(session: Session, gang_id: str, seen_before: datetime) -> list[int]:
    """The slots of members whose ranks failed, or that have not reported since
    `seen_before`."""
    return list(
        session.scalars(
            select(GangMember.slot).where(
                GangMember.gang_id == gang_id,
                or_(
                    GangMember.ended == "failed",
                    and_(GangMember.ended.is_(None), GangMember.seen_at < seen_before),
                ),
            )
        )
    )
