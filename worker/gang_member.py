"""A member's side of a job on several machines: join the gang a leader is gathering, wait
for it to form, run this machine's ranks of the attempt, and stop them when the attempt is
over.

A member writes nothing of the job but its own presence (`seen_at`, at each heartbeat while it
waits and trains: its leader ends the attempt when it stops), how its ranks ended, and, when
they failed on their own, an event saying so. Its ranks report nothing else: the leader's
first rank reports, validates and checkpoints for all, and a member's ranks read the
checkpoint to resume from over the process group (`trainer.checkpoint`). A member killed
outright takes its ranks with it; the leader's then lose a peer and end the attempt, to be
retried, or go on without it if elastic.
"""

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import session_scope
from app.models import Gang, Job
from app.services import attempts, gangs, job_state
from app.storage import get_store
from trainer.checkpoint import INTERRUPTED_EXIT
from worker import gang, trainer_process
from worker.supervisor import CHECKPOINTS_DIR, Attempt, CheckpointSync, launch, write_run_request

log = logging.getLogger(__name__)


def serve(gang_id: str, settings: Settings, owner: str, stopping: Callable[[], bool]) -> None:
    """Join the gang, if it still wants a machine, and run this machine's part of it; a
    worker `stopping` (a deploy, a scale-down) leaves before it starts its ranks."""
    with session_scope() as session:
        slot = gangs.join(session, gang_id, owner)
    if slot is None:
        return  # formed, given up or full already: the message came late
    formed = _wait_until_formed(gang_id, slot, settings)
    if formed is None:
        log.info("gang %s was given up: this worker leaves it", gang_id)
        return
    job_id, number, endpoint, machines = formed
    run_dir = settings.run_dir / job_id / f"attempt-{number}-machine-{slot}"
    process = None
    try:
        # Fetching the inputs may take a while: the leader must not count it lost meanwhile.
        with _seen_meanwhile(gang_id, slot, settings), session_scope() as session:
            inputs = attempts.attempt_inputs(session, job_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        attempt = Attempt(
            job_id, inputs.tenant_id, number, settings, run_dir, inputs.spec,
            checkpoints=CheckpointSync(
                job_id, number, (run_dir / CHECKPOINTS_DIR).resolve(), get_store()
            ),  # never written to: the leader's first rank checkpoints
        )  # fmt: skip
        write_run_request(attempt, inputs)
        attempt.rendezvous = gang.launch_args(
            machines, inputs.spec.resources, job_id, number, endpoint, settings
        )
        if stopping():
            raise RuntimeError("this worker is stopping")
        process, reader = launch(attempt)
        log.info("job %s attempt %d: machine %d started its ranks", job_id, number, slot,
                 extra={"job_id": job_id, "attempt": number})  # fmt: skip
        _watch(attempt, process, gang_id, slot)
        reader.join(timeout=10)
        own_failure = _report_failure(attempt, process.returncode, slot)
        _end(gang_id, slot, failed=own_failure)
    except Exception:
        log.exception("job %s attempt %d: machine %d could not take part", job_id, number, slot)
        _end(gang_id, slot, failed=True)
    finally:
        if process is not None:
            trainer_process.stop(process, settings.stop_grace_seconds)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_until_formed(
    gang_id: str, slot: int, settings: Settings
) -> tuple[str, int, str, int] | None:
    """The job, attempt, rendezvous and machine count once the leader has claimed the job;
    None when it gave the gang up (or the database cannot be reached for longer than the
    gang could have waited)."""
    deadline = time.monotonic() + settings.gang_wait_seconds + settings.lease_seconds
    while time.monotonic() < deadline:
        try:
            with session_scope() as session:
                formed = gangs.formed_gang(session, gang_id, slot)
                if formed is not None:
                    machines = gangs.joined(session, gang_id) + 1
                    return formed.job_id, formed.attempt, formed.endpoint, machines
        except gangs.GangGone:
            return None
        except DBAPIError as error:
            log.warning("gang %s: the database cannot be reached (%s)", gang_id, error.orig)
        time.sleep(gang.POLL_SECONDS)
    return None


@contextlib.contextmanager
def _seen_meanwhile(gang_id: str, slot: int, settings: Settings) -> Iterator[None]:
    """Renew the member's presence from a thread while it gets ready."""
    ready = threading.Event()

    def renew() -> None:
        while not ready.wait(settings.heartbeat_seconds):
            _seen(gang_id, slot)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        ready.set()
        renewer.join()


def _seen(gang_id: str, slot: int) -> bool | None:
    """Say the member is there; whether its attempt still holds the job (None: unknown, the
    database cannot be reached: its ranks train on, the leader decides)."""
    try:
        with session_scope() as session:
            gangs.seen(session, gang_id, slot)
            formed = session.get(Gang, gang_id)
            job = session.get(Job, formed.job_id)
            return job.status == "running" and job.attempt == formed.attempt
    except DBAPIError:
        return None


def _watch(attempt: Attempt, process: trainer_process.TrainerProcess, gang_id: str, slot: int):
    """Until the ranks exit: report presence; stop them once the attempt is over (the job
    ended, was cancelled, or its leader's attempt failed and was retried)."""
    settings = attempt.settings
    while process.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=settings.heartbeat_seconds)
        if _seen(gang_id, slot) is False:
            trainer_process.stop(process, settings.stop_grace_seconds)
            return


def _end(gang_id: str, slot: int, failed: bool) -> None:
    # Unsaid, the leader counts it lost a lease later.
    with contextlib.suppress(DBAPIError), session_scope() as session:
        gangs.end(session, gang_id, slot, failed)


def _report_failure(attempt: Attempt, returncode: int, slot: int) -> bool:
    """Whether this machine's ranks failed on their own (killed, or an error of theirs, not a
    lost peer nor a stop at a checkpoint); the error, as an event of the job, since the
    leader's outcome says only that a peer was lost."""
    if returncode in (0, INTERRUPTED_EXIT):
        return False
    error = None
    while not attempt.events.empty():
        event = attempt.events.get_nowait()
        if event["type"] == "error" and event.get("error_type") != "peer_lost":
            error = event
    if error is not None:
        message = f"machine {slot}: {error['error_type']}: {error['message']}"
        with contextlib.suppress(DBAPIError), session_scope() as session:
            job_state.add_event(session, attempt.job_id, attempt.attempt, "log", message)
    return True
