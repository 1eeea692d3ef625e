"""A member's side of a job on several machines: join the gang a leader is gathering, wait
for it to form, run this machine's ranks of the attempt, and stop them when the attempt is
over.

A member writes nothing of the job but its own presence (`seen_at`, each heartbeat: its
leader ends the attempt when it stops) and, when its trainer fails on its own, an event
saying so. Its ranks report nothing else: the leader's first rank reports, validates and
checkpoints for all, and a member's ranks read the checkpoint to resume from over the process
group (`trainer.checkpoint`). A member killed outright takes its ranks with it; the leader's
then lose a peer and end the attempt, to be retried, or to go on without it if elastic.
"""

import contextlib
import logging
import shutil
import subprocess
import time

from app.config import Settings
from app.db import session_scope
from app.models import Job
from app.services import attempts, gangs, job_state
from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.run_request import RunRequest
from worker import gang, trainer_process
from worker.supervisor import CHECKPOINTS_DIR, Attempt, launch

log = logging.getLogger(__name__)


def serve(gang_id: str, settings: Settings, owner: str) -> None:
    """Join the gang, if it still wants a machine, and run this machine's part of it."""
    with session_scope() as session:
        slot = gangs.join(session, gang_id, owner)
    if slot is None:
        return  # formed, given up or full already: the message came late
    formed = _wait_until_formed(gang_id, slot)
    if formed is None:
        log.info("gang %s was given up: this worker leaves it", gang_id)
        return
    job_id, attempt_number, endpoint, nodes = formed
    about = {"job_id": job_id, "attempt": attempt_number}
    with session_scope() as session:
        inputs = attempts.attempt_inputs(session, job_id)
    run_dir = settings.run_dir / job_id / f"attempt-{attempt_number}-machine-{slot}"
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(job_id, inputs.tenant_id, attempt_number, settings, run_dir, inputs.spec)
    request = RunRequest(
        job_id=job_id,
        model_id=attempt.model_id,  # never written: the leader's first rank writes the model
        spec=inputs.spec,
        base_model_path=inputs.base_model_path,
        datasets=inputs.datasets,
        output_path=run_dir / "model.safetensors",
        checkpoint_dir=(run_dir / CHECKPOINTS_DIR).resolve(),
        checkpoint_every_steps=settings.checkpoint_every_steps,
    )
    (run_dir / "run.json").write_text(request.model_dump_json())
    resources = inputs.spec.resources
    attempt.rendezvous = gang.launch_args(
        nodes, resources, job_id, attempt_number, endpoint, settings
    )
    process = None
    try:
        process, reader = launch(attempt)
        log.info("job %s attempt %d: machine %d started its ranks", job_id, attempt_number, slot,
                 extra=about)  # fmt: skip
        _watch(attempt, process, gang_id, slot)
        reader.join(timeout=10)
        if process.returncode != 0:  # killed, failed or stopped: the attempt cannot go on
            with session_scope() as session:
                gangs.leave(session, gang_id, slot)
        _report_failure(attempt, process.returncode, slot)
    finally:
        if process is not None:
            trainer_process.stop(process, settings.stop_grace_seconds)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_until_formed(gang_id: str, slot: int) -> tuple[str, int, str, int] | None:
    """The job, attempt, rendezvous and machine count once the leader has claimed the job;
    None when it gave the gang up."""
    while True:
        try:
            with session_scope() as session:
                formed = gangs.formed_gang(session, gang_id, slot)
                if formed is not None:
                    machines = gangs.joined(session, gang_id) + 1
                    return formed.job_id, formed.attempt, formed.endpoint, machines
        except gangs.GangGone:
            return None
        time.sleep(gang.POLL_SECONDS)


def _watch(attempt: Attempt, process: trainer_process.TrainerProcess, gang_id: str, slot: int):
    """Until the ranks exit: report presence; stop them once the attempt is over (the job
    ended, was cancelled, or its leader's attempt failed and was retried)."""
    settings = attempt.settings
    while process.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=settings.heartbeat_seconds)
        with session_scope() as session:
            gangs.seen(session, gang_id, slot)
            job = session.get(Job, attempt.job_id)
            current = job.status == "running" and job.attempt == attempt.attempt
        if not current:
            trainer_process.stop(process, settings.stop_grace_seconds)
            return


def _report_failure(attempt: Attempt, returncode: int, slot: int) -> None:
    """A failure of this machine's own (an error its ranks reported, not a lost peer), as an
    event of the job: the leader's outcome says only that a peer was lost."""
    error = None
    while not attempt.events.empty():
        event = attempt.events.get_nowait()
        if event["type"] == "error" and event.get("error_type") != "peer_lost":
            error = event
    if returncode in (0, INTERRUPTED_EXIT) or error is None:
        return
    message = f"machine {slot}: {error['error_type']}: {error['message']}"
    with session_scope() as session:
        job_state.add_event(session, attempt.job_id, attempt.attempt, "log", message)
