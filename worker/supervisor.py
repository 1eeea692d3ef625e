"""Supervises one attempt of a job: claim it, run the trainer as a child process, relay its
events into the database while renewing the lease, and record the outcome.

The trainer is a process of its own (`worker.trainer_process`: forked from a warm process
that has made its imports, or a fresh interpreter), never a fork of this process: CUDA cannot
be initialised in a forked child, and a separate process can be stopped. A job of several
processes runs its trainers as ranks under torchrun, through `trainer.launch`, which keeps
the single trainer's events channel, signals and exit status.
"""

import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import session_scope
from app.models import Job, Model, new_id
from app.problems import is_unreachable
from app.services import attempts, checkpoints, dispatch, job_state, sweeps
from app.services.model_files import MODEL_FILE, delete_model_files, model_from_card
from app.storage import ArtifactStore, ChecksumMismatch, get_store
from trainer.card import ModelCard
from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.run_request import RunRequest
from trainer.spec import CheckpointRetention, JobSpec
from worker import gang, mlflow_logging, trainer_process
from worker.mlflow_logging import JobTracking
from worker.trainer_process import TrainerProcess

log = logging.getLogger(__name__)
T = TypeVar("T")
CHECKPOINTS_DIR = "checkpoints"
START_CHECKPOINT_FILE = "start-checkpoint.pt"


@dataclass
class CheckpointSync:
    """A job's checkpoints go through the artifact store: each one the trainer reports is put
    there before its row is recorded, so that the API lists it, any worker resumes from the
    latest, and any job may start from it (`base_checkpoint_id`); those the job's retention
    policy drops are deleted, here and there. Once the job is over, the store keeps what the
    policy kept."""

    job_id: str
    attempt: int
    directory: Path  # the trainer's: it outlives attempts on this machine
    store: ArtifactStore

    def keep(self, reported: list[dict], retention: CheckpointRetention) -> list[dict]:
        """Put the checkpoints the trainer reported since the last heartbeat in the store; the
        events of those stored. One saved again at its step (at an epoch's end) counts once;
        those the retention policy would drop at once (older than the last `keep_last`, and
        without figures or with no `keep_best`) are not stored: their files go."""
        by_file = {event["file"]: event for event in reported}  # the later save of a step
        events = sorted(by_file.values(), key=lambda event: event["step"])
        recent = events[-retention.keep_last :]
        ranked = (
            [e for e in events if e["metrics"] and e not in recent] if retention.keep_best else []
        )
        for event in events:
            if event not in recent and event not in ranked:
                (self.directory / event["file"]).unlink(missing_ok=True)
        return [event for event in events if (event in recent or event in ranked)
                and self.put(event["file"])]  # fmt: skip

    def put(self, file: str) -> bool:
        """Put a checkpoint the trainer reported in the store; False if it could not be."""
        try:
            key = checkpoints.checkpoint_key(self.job_id, self.attempt, file)
            self.store.put(key, self.directory / file)
            return True
        except Exception as error:  # not only OSError: s3fs passes some botocore errors on
            log.warning(
                "job %s: could not store the checkpoint %s: %s",
                self.job_id,
                file,
                error,
                extra={"job_id": self.job_id},
            )
            return False

    def fetch(self, key: str | None) -> None:
        """Before an attempt: the job's latest checkpoint, unless this machine has it."""
        if key is not None and not (self.directory / Path(key).name).exists():
            self.store.get(key, self.directory / Path(key).name)

    def drop(self, keys: list[str]) -> None:
        for key in keys:
            (self.directory / Path(key).name).unlink(missing_ok=True)
            try:
                self.store.delete(key)
            except Exception as error:  # its row is gone: the file is only an orphan
                log.warning("job %s: could not delete %s: %s", self.job_id, key, error)


@dataclass
class Attempt:
    job_id: str
    tenant_id: str
    attempt: int
    settings: Settings
    run_dir: Path
    spec: JobSpec
    model_id: str = field(default_factory=lambda: new_id("model"))
    events: queue.Queue = field(default_factory=queue.Queue)
    card: ModelCard | None = None  # the trained model's, once the trainer reports it
    error: tuple[str, str] | None = None
    # What the model is trained on: dataset name -> sha256 of the upload (None: built-in).
    datasets: dict[str, str | None] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)  # events not yet written
    renewed_at: float = field(default_factory=time.monotonic)
    # A sweep's trial: its sweep, and the (metric, split) its pruner judges it by.
    sweep_id: str | None = None
    objective: tuple[str, str] | None = None
    # Set by the events reader when an objective point arrives, or its stream ends: a trial's
    # pruner hears each epoch at once, not a heartbeat later, epochs later on a fast model.
    news: threading.Event = field(default_factory=threading.Event)
    output_closed: bool = False
    # The epoch its pruner stopped it after, when its sweep keeps pruned trials' models: the
    # trainer is asked to finish, and the job ends `pruned` with the model it saves.
    pruned_after: int | None = None
    tracking: JobTracking = field(default_factory=JobTracking)  # to MLflow, where it says
    checkpoints: CheckpointSync | None = None
    # Store keys of the checkpoint to resume from, and of another job's to start from.
    latest_checkpoint_key: str | None = None
    start_checkpoint_key: str | None = None
    pause_requested: bool = False  # the job was asked to pause: checkpoint and stop
    # A job on several machines: its gang, and this machine's `trainer.launch` rendezvous.
    gang_id: str | None = None
    rendezvous: list[str] = field(default_factory=list)

    @property
    def job_dir(self) -> Path:
        """The job's directory: it outlives attempts, holding the checkpoint."""
        return self.run_dir.parent

    def relay(self) -> bool:
        """Write pending trainer events and renew the lease; False when the job was lost.

        A database that cannot be reached keeps the events for the next heartbeat; once it has
        been unreachable for a whole lease, the job may be another attempt's: lost."""
        saved = []
        while not self.events.empty():
            event = self.events.get_nowait()
            if event["type"] == "result":
                self.card = ModelCard.model_validate(event["card"])
            elif event["type"] == "error":
                self.error = (event["error_type"], event["message"])
            elif event["type"] == "checkpoint":
                saved.append(event)
            else:
                self.pending.append(event)
        self.pending += self.checkpoints.keep(saved, self.spec.checkpoints)
        try:
            with session_scope() as session:
                heartbeat = attempts.record_heartbeat(
                    session,
                    self.job_id,
                    self.attempt,
                    self.settings.lease_seconds,
                    self.pending,
                    self.spec.checkpoints,
                )
        except DBAPIError as error:
            unreachable_for = time.monotonic() - self.renewed_at
            log.warning(
                "job %s: heartbeat failed (%s); retrying",
                self.job_id,
                error.orig,
                extra={"job_id": self.job_id, "attempt": self.attempt},
            )
            return unreachable_for < self.settings.lease_seconds
        written, self.pending = self.pending, []
        self.tracking.metrics(written)
        self.renewed_at = time.monotonic()
        self.checkpoints.drop(heartbeat.dropped_checkpoint_keys)
        held = bool(heartbeat.lease)
        self.pause_requested = heartbeat.lease is job_state.Lease.PAUSE
        if held and self.objective is not None and self.pruned_after is None:
            epochs = [e for e in written if e["type"] == "metric" and _of(e) == self.objective]
            return not epochs or self._trial_goes_on(epochs)
        return held  # a trial told to finish reports no more epochs: its pruner has judged

    def _trial_goes_on(self, epoch_points: list[dict]) -> bool:
        """Report the epochs to the sweep; False when its pruner ended the trial. A sweep that
        cannot be reached now does not stop training: the next epoch is reported again."""
        try:
            verdict, epoch = sweeps.report(self.job_id, self.attempt, epoch_points)
        except Exception:
            log.exception("job %s: could not report to its sweep", self.job_id)
            return True
        if verdict is sweeps.Verdict.FINISH and self.pruned_after is None:
            self.pruned_after = epoch
        return verdict is not sweeps.Verdict.PRUNED


def _of(point: dict) -> tuple[str | None, str | None]:
    return point.get("name"), point.get("split")


def _read_events(stream, attempt: Attempt) -> None:
    for line in stream:
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ValueError("not an event object")
        except ValueError:  # JSONDecodeError among them
            log.warning(
                "job %s: ignored a malformed trainer event: %r",
                attempt.job_id,
                line[:200],
                extra={"job_id": attempt.job_id},
            )
            continue
        attempt.events.put(event)
        if event["type"] == "metric" and _of(event) == attempt.objective:
            attempt.news.set()
    attempt.output_closed = True
    attempt.news.set()


def _wait_for_news(attempt: Attempt, process: TrainerProcess) -> None:
    """Until the next heartbeat is due or the trainer exits; for a sweep's trial, also until
    an epoch's objective arrives, so that its pruner stops it before it trains on."""
    if attempt.objective is None or attempt.output_closed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=attempt.settings.heartbeat_seconds)
    elif attempt.news.wait(attempt.settings.heartbeat_seconds):
        attempt.news.clear()  # before the relay, which takes every event queued so far


@contextlib.contextmanager
def _lease_kept(attempt: Attempt) -> Iterator[threading.Event]:
    """Renew the lease from a thread while the attempt gets ready: fetching a checkpoint from
    the artifact store, or a zygote still making its imports on a loaded machine, can take
    longer than a lease. The event is set if the job was lost meanwhile."""
    ready, lost = threading.Event(), threading.Event()

    def renew() -> None:
        while not ready.wait(attempt.settings.heartbeat_seconds):
            if not attempt.relay():
                lost.set()
                return

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield lost
    finally:
        ready.set()
        renewer.join()


def launch(attempt: Attempt) -> tuple[TrainerProcess, threading.Thread]:
    """Start the attempt's trainer; a thread queues its events on `attempt.events`."""
    read_fd, write_fd = os.pipe()
    process = trainer_process.start(
        attempt.run_dir,
        write_fd,
        attempt.run_dir / "trainer.log",
        attempt.spec.resources.processes,
        attempt.settings.trainer_zygote,
        attempt.rendezvous,
    )
    os.close(write_fd)
    reader = threading.Thread(
        target=_read_events,
        args=(os.fdopen(read_fd), attempt),
        daemon=True,
    )
    reader.start()
    return process, reader


def _log_tail(run_dir: Path, lines: int = 20) -> str:
    path = run_dir / "trainer.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _record_outcome(attempt: Attempt, returncode: int) -> None:
    job_id, n = attempt.job_id, attempt.attempt
    about = {"job_id": job_id, "attempt": n}
    if returncode == 0 and attempt.card is not None and (attempt.run_dir / MODEL_FILE).exists():
        with _lease_kept(attempt):  # uploading a large model to a remote store takes a while
            model = model_from_card(
                attempt.card,
                attempt.run_dir / MODEL_FILE,
                attempt.tenant_id,
                attempt.job_id,
                attempt.datasets,
            )

        def record() -> bool:
            with session_scope() as session:
                if session.get(Model, model.id) is not None:  # a try whose answer was lost
                    return True
                return job_state.succeed(
                    session, job_id, n, model, attempt.card.metrics, attempt.pruned_after
                )

        try:
            committed = _despite_outages(attempt, record)
        except DBAPIError:  # the job's lease runs out and another attempt resumes it
            delete_model_files(model.id)
            raise
        if committed:
            log.info("job %s attempt %d succeeded: model %s", job_id, n, model.id, extra=about)
        else:
            log.info(
                "job %s attempt %d lost the job (cancelled or reaped); its model is discarded",
                job_id,
                n,
                extra=about,
            )
            delete_model_files(model.id)
        return
    if returncode == INTERRUPTED_EXIT:  # on SIGTERM, or a machine of the gang was lost
        stopped = ("interrupted", "the trainer stopped at a checkpoint on SIGTERM")
        error_type, message = attempt.error or stopped
        retryable = True
    elif returncode > 0:
        error_type, message = attempt.error or ("training_error", _log_tail(attempt.run_dir))
        retryable = False
    else:  # killed by a signal (OOM killer, an operator): the same job may well succeed again
        error_type, message = "trainer_killed", f"the trainer was killed by signal {-returncode}"
        retryable = True

    def record() -> str | None:
        with session_scope() as session:
            return job_state.fail(session, job_id, n, error_type, message, retryable)

    status = _despite_outages(attempt, record)
    outcome = f"the job is now {status}" if status else "the job was no longer this attempt's"
    log.warning(
        "job %s attempt %d ended: %s (exit %d); %s",
        job_id,
        n,
        error_type,
        returncode,
        outcome,
        extra=about,
    )
    if status == "queued":
        dispatch.send([job_id])


def _despite_outages(attempt: Attempt, write: Callable[[], T]) -> T:
    """`write` (one transaction), tried again while the database cannot be reached, as
    heartbeats are, for up to a lease: a database restart as the trainer ends must not cost
    the attempt its outcome. Past that, the error is raised: the lease has run out, and the
    job is another attempt's."""
    deadline = time.monotonic() + attempt.settings.lease_seconds
    while True:
        try:
            return write()
        except DBAPIError as error:
            if not is_unreachable(error) or time.monotonic() > deadline:
                raise  # a refused statement is no outage: trying again would not help
            log.warning(
                "job %s: the database cannot be reached (%s); retrying",
                attempt.job_id,
                error.orig,
                extra={"job_id": attempt.job_id, "attempt": attempt.attempt},
            )
            time.sleep(attempt.settings.heartbeat_seconds)


def _wake_waiting_jobs(tenant_id: str) -> None:
    """This attempt's running-job slot is free: send the tenant's jobs that wait for one."""
    with session_scope() as session:
        waiting = job_state.jobs_to_dispatch(session, None, tenant_id)
    if waiting:
        dispatch.send(waiting)


def _fail_to_prepare(job_id: str, attempt: int, error: Exception) -> None:
    """What the attempt reads cannot be had: gone for good (a checkpoint its job's policy
    dropped, a file missing from the store or not the one recorded) fails the job; anything
    else (the store unreachable a moment) is retried, at once rather than a lease later."""
    if isinstance(error, attempts.CheckpointGone):
        error_type, retryable = "checkpoint_gone", False
    elif isinstance(error, FileNotFoundError | ChecksumMismatch):
        error_type, retryable = "input_gone", False
    elif isinstance(error, gang.CannotStart):
        error_type, retryable = "gang_unavailable", True
    else:
        error_type, retryable = "input_unavailable", True
    log.warning(
        "job %s attempt %d could not get its inputs: %s",
        job_id,
        attempt,
        error,
        exc_info=retryable,  # unforeseen: where it came from
        extra={"job_id": job_id, "attempt": attempt},
    )
    with session_scope() as session:
        status = job_state.fail(session, job_id, attempt, error_type, str(error), retryable)
        tenant_id = session.get(Job, job_id).tenant_id
    if status == "queued":
        dispatch.send([job_id])
    _wake_waiting_jobs(tenant_id)


def _prepare(job_id: str, settings: Settings, owner: str) -> Attempt | None:
    """Claim the job and write its trainer's run request; None when it is not claimable."""
    with session_scope() as session:
        n = job_state.claim(session, job_id, owner, settings.lease_seconds)
        if n is None:
            about = {"job_id": job_id}
            if job_state.wait_for_slot(session, job_id):
                log.info("job %s waits for a running-job slot of its tenant", job_id, extra=about)
            else:
                log.info(
                    "job %s is not claimable (duplicate delivery, cancelled or done)",
                    job_id,
                    extra=about,
                )
            return None
    try:
        with session_scope() as session:
            inputs = attempts.attempt_inputs(session, job_id)
    except Exception as error:
        _fail_to_prepare(job_id, n, error)
        return None
    job_dir = settings.run_dir / job_id  # outlives attempts: it holds the checkpoints
    run_dir = job_dir / f"attempt-{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(
        job_id,
        inputs.tenant_id,
        n,
        settings,
        run_dir,
        inputs.spec,
        datasets=inputs.trained_on,
        sweep_id=inputs.sweep_id,
        objective=inputs.objective,
        checkpoints=CheckpointSync(job_id, n, (job_dir / CHECKPOINTS_DIR).resolve(), get_store()),
        latest_checkpoint_key=inputs.latest_checkpoint_key,
        start_checkpoint_key=inputs.start_checkpoint_key,
    )
    start_from = (
        (run_dir / START_CHECKPOINT_FILE).resolve() if inputs.start_checkpoint_key else None
    )
    write_run_request(attempt, inputs, start_from)
    return attempt


def write_run_request(
    attempt: Attempt, inputs: attempts.AttemptInputs, start_checkpoint_path: Path | None = None
) -> None:
    """The trainer's run request, RUN_DIR/run.json, for this machine's attempt."""
    request = RunRequest(
        job_id=attempt.job_id,
        model_id=attempt.model_id,
        spec=inputs.spec,
        base_model_path=inputs.base_model_path,
        datasets=inputs.datasets,
        streams=inputs.streams,
        output_path=attempt.run_dir / MODEL_FILE,
        checkpoint_dir=attempt.checkpoints.directory,
        checkpoint_every_steps=attempt.settings.checkpoint_every_steps,
        start_checkpoint_path=start_checkpoint_path,
    )
    (attempt.run_dir / "run.json").write_text(request.model_dump_json())


def _watch(attempt: Attempt, process: TrainerProcess) -> bool:
    """Heartbeats until the trainer exits: True (stopped to pause, too). False when this
    attempt stopped it: the job was lost (cancelled or reaped), or it ran past its deadline
    and failed."""
    job_id, n, settings = attempt.job_id, attempt.attempt, attempt.settings
    about = {"job_id": job_id, "attempt": n}
    limit = attempt.spec.resources.max_runtime_seconds
    deadline = time.monotonic() + limit
    finishing = pausing = False
    while process.poll() is None:
        _wait_for_news(attempt, process)
        if not attempt.relay():
            trainer_process.stop(process, settings.stop_grace_seconds)
            log.info(
                "job %s attempt %d lost the job (cancelled, reaped or pruned); trainer stopped",
                job_id,
                n,
                extra=about,
            )
            return False
        # A machine lost ends the attempt; an elastic one's launchers re-form without it.
        if attempt.spec.resources.elastic is None and _lost_a_machine(attempt, process):
            return False
        if attempt.pruned_after is not None and not finishing:
            trainer_process.finish(process)
            finishing = True
        if attempt.pause_requested and not pausing:
            # SIGTERM: a checkpoint, exit 75, and the outcome pauses the job. Heartbeats go on
            # meanwhile, however long a large model's checkpoint takes to write.
            log.info("job %s attempt %d: pausing", job_id, n, extra=about)
            trainer_process.interrupt(process)
            pausing = True
        if time.monotonic() > deadline:
            trainer_process.stop(process, settings.stop_grace_seconds)
            message = f"the job ran past max_runtime_seconds={limit}"
            with session_scope() as session:
                job_state.fail(session, job_id, n, "timeout", message, retryable=False)
            log.warning("job %s attempt %d: %s; failed", job_id, n, message, extra=about)
            return False
    return True


def _lost_a_machine(attempt: Attempt, process: TrainerProcess) -> bool:
    """Whether a member of the attempt's gang stopped reporting, and the attempt ended for
    it: retryable, unless this machine's trainer ends meanwhile (its own outcome, recorded as
    usual, says more than the member's absence). Its last events are written first."""
    lost = gang.lost_members(attempt.gang_id, attempt.settings) if attempt.gang_id else []
    if not lost:
        return False
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=attempt.settings.stop_grace_seconds)
    if process.poll() is not None:
        return False
    trainer_process.stop(process, attempt.settings.stop_grace_seconds)
    attempt.relay()
    job_id, n = attempt.job_id, attempt.attempt
    message = f"machine {lost[0]} of the job's {attempt.spec.resources.nodes} stopped reporting"

    def record() -> str | None:
        with session_scope() as session:
            return job_state.fail(session, job_id, n, "node_lost", message, retryable=True)

    status = _despite_outages(attempt, record)
    log.warning("job %s attempt %d: %s", job_id, n, message, extra={"job_id": job_id})
    if status == "queued":
        dispatch.send([job_id])
    return True


def _run(attempt: Attempt) -> None:
    """Start the trainer, watch it, and record how it ended."""
    job_id, n = attempt.job_id, attempt.attempt
    about = {"job_id": job_id, "attempt": n}
    process = None
    try:
        with _lease_kept(attempt) as lost:
            attempt.checkpoints.fetch(attempt.latest_checkpoint_key)
            if attempt.start_checkpoint_key is not None:
                get_store().get(
                    attempt.start_checkpoint_key, attempt.run_dir / START_CHECKPOINT_FILE
                )
            process, reader = launch(attempt)
        if lost.is_set():
            log.info("job %s attempt %d lost the job while starting", job_id, n, extra=about)
            return  # `finally` stops the trainer
        log.info("job %s attempt %d: trainer %d started", job_id, n, process.pid, extra=about)
        if not _watch(attempt, process):
            return
        reader.join(timeout=10)
        if attempt.relay():
            _record_outcome(attempt, process.returncode)
    finally:
        if process is not None:  # this attempt failed on its way: its trainer goes with it
            trainer_process.stop(process, attempt.settings.stop_grace_seconds)


def _finish(attempt: Attempt) -> None:
    """Clean up after the attempt, and after the job once no attempt will resume it: its
    local files go; the store keeps the checkpoints its retention policy kept."""
    attempt.tracking.finish(attempt.card, attempt.run_dir / MODEL_FILE)
    shutil.rmtree(attempt.run_dir, ignore_errors=True)

    def is_over() -> bool:
        with session_scope() as session:
            return job_state.is_over(session, attempt.job_id)

    over = _despite_outages(attempt, is_over)
    if over:
        shutil.rmtree(attempt.job_dir, ignore_errors=True)
        if attempt.sweep_id is not None:  # the trial ended: the study learns, more may start
            try:
                sweeps.advance(attempt.sweep_id)
            except Exception:  # the reconciler advances it in a few seconds
                log.exception("job %s: could not advance its sweep", attempt.job_id)
    _wake_waiting_jobs(attempt.tenant_id)


def supervise(
    job_id: str, settings: Settings, owner: str, stopping: Callable[[], bool] = lambda: False
) -> None:
    """Run one attempt at the job, if it can be claimed: prepare, launch and watch the
    trainer, record the outcome, and clean up. A job of several machines gathers the others
    first; a worker `stopping` meanwhile hands the job back."""
    resources = gang.resources_of(job_id)
    gathered = None
    if resources.nodes > 1:  # its other machines first, all or none
        gathered = gang.gather(job_id, resources, settings, owner)
        if gathered is None:
            return
        if stopping():
            gang.disband(gathered)
            dispatch.send([job_id])
            return
    attempt = _prepare(job_id, settings, owner)
    if attempt is None:
        if gathered is not None:
            gang.disband(gathered)
        return
    try:
        if gathered is not None:
            attempt.gang_id = gathered.id
            try:
                rendezvous = gang.start(gathered, job_id, attempt.attempt, settings)
            except gang.CannotStart as error:
                _fail_to_prepare(job_id, attempt.attempt, error)
                return
            attempt.rendezvous = [*rendezvous, "--leader"]
        attempt.tracking = mlflow_logging.start(attempt)
        _run(attempt)
    finally:
        _finish(attempt)
