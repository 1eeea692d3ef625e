"""Sweeps: an Optuna study whose trials run as jobs on the workers.

The study lives in Optuna's tables in the service's database (`storage()`), so every API
process and worker sees the same one. One process at a time changes it (`advance`): it tells
the study how finished trial jobs ended, then asks it for new trials and queues a job for each,
up to `max_parallel_trials` at once and `max_trials` in all. Whoever notices a change calls
`advance` (the API after a create or cancel, a worker after a trial's attempt, the reconciler
every few seconds); the sweep's row holds a lease for the process driving it and a `dirty`
flag, so no call is lost while another drives and no two drive at once.

A trial's job reports its objective after every epoch; the worker passes it to the study
(`report`), and when the pruner says so the job ends `pruned`, like a cancel.

Every step can be repeated after a crash: a trial asked for but whose job was never created
(the driver died in between) gets its job at the next `advance`; a job is created once per
trial (a unique index on the sweep and trial number); a trial is told once.
"""

import asyncio
import enum
import logging
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import cache
from typing import Any

import optuna
from optuna.storages._rdb.models import StudyModel as OptunaStudy
from optuna.storages._rdb.models import TrialModel as OptunaTrial
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sse_starlette import ServerSentEvent

from app.config import get_settings
from app.db import session_scope
from app.models import Job, Sweep, Tenant, new_id, utcnow
from app.problems import Conflict, InvalidInput, NotFound, TooManyRequests
from app.schemas import BestTrial, Page, SweepOut, TrialCounts, TrialOut
from app.services import datasets, dispatch, job_state, jobs, pagination, tenants, webhooks
from app.sweep_spec import SweepSpec
from trainer.data import dataset_name
from trainer.heads import HEADS
from trainer.methods import METHODS, SUPERVISED_METRICS
from trainer.spec import JobSpec, SpecIssue, TrainData

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

ACTIVE = ("queued", "running")
DRIVER_LEASE = timedelta(seconds=60)
IMPORTANCE_AFTER = 3  # completed trials before importances are computed
PRUNED_AFTER = "tunery:pruned_after"  # a trial's system attribute: the epoch it was pruned at
TrialState = optuna.trial.TrialState
STATE_NAMES = {
    TrialState.RUNNING: "running",
    TrialState.WAITING: "running",
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
_job_spec = TypeAdapter(JobSpec)


@cache
def storage() -> optuna.storages.RDBStorage:
    """Optuna's storage on the service's database, whose tables the migrations made: Optuna
    neither creates nor stamps anything (its Alembic would write to our `alembic_version`)."""
    url = get_settings().database_url
    engine = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_size": 5}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True, **engine},
        skip_compatibility_check=True,
        skip_table_creation=True,
    )


def _study(sweep_id: str, spec: SweepSpec) -> optuna.Study:
    """The sweep's study, made by its first `advance`: outside the transaction that creates the
    sweep, which on SQLite holds the one write lock Optuna's own connection would wait for.
    Loaded first: creating one that exists costs a failed INSERT (and a server log line)."""
    try:
        return optuna.load_study(study_name=sweep_id, storage=storage(), pruner=spec.make_pruner())
    except KeyError:
        return optuna.create_study(
            study_name=sweep_id,
            storage=storage(),
            direction=spec.objective.study_direction,
            pruner=spec.make_pruner(),
            load_if_exists=True,  # another process made it meanwhile
        )


def _trials(sweep_id: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, for reading: none before its first `advance` made it."""
    try:
        study = optuna.load_study(study_name=sweep_id, storage=storage())
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


# Submission


def _reported(session: Session, tenant_id: str, job: JobSpec) -> tuple[str, ...]:
    """What the job's method reports on the validation split after each epoch: of the task
    heads' figures, only those of its dataset's task (a regressor reports no accuracy)."""
    method = METHODS.get(job.method.name)
    if method is None:
        return ()
    data = job.data
    ref = data.train if isinstance(data, TrainData) else (data.source or data.target)
    info = datasets.describer(session, tenant_id)(dataset_name(ref))
    if info is None or info.task not in HEADS:
        return method.validation_metrics
    other_tasks = set(SUPERVISED_METRICS) - set(HEADS[info.task].validation_metrics)
    return tuple(name for name in method.validation_metrics if name not in other_tasks)


def check(session: Session, tenant_id: str, spec: SweepSpec) -> list[SpecIssue]:
    """What would make the sweep fail or its trials be refused, found before anything is
    queued: each parameter's path and extreme values against the job spec's own validation,
    the objective against what the method reports, the grid and the tenant's quota."""
    job = spec.job
    issues = [
        SpecIssue(f"job.{i.field}", i.message) for i in jobs.spec_issues(session, tenant_id, job)
    ]
    if issues:
        return issues
    if job.register_as is not None:
        message = (
            "a sweep's trials are not registered: register the best trial's model with "
            "POST /v1/registered-models/{name}/versions"
        )
        issues.append(SpecIssue("job.register_as", message))
    reported = _reported(session, tenant_id, job)
    per_epoch = reported if spec.objective.split == "validation" else ("loss",)
    if spec.objective.metric not in per_epoch:
        message = (
            f"{job.method.name} reports {', '.join(per_epoch)} on {spec.objective.split} after "
            f"each epoch, not {spec.objective.metric!r}"
        )
        issues.append(SpecIssue("objective.metric", message))
    for path, parameter in spec.parameters.items():
        issues += _parameter_issues(session, tenant_id, spec, path, parameter.extremes())
    if spec.sampler.name == "grid":
        space = spec.grid()
        if space is None:
            stepless = [p for p, param in spec.parameters.items() if param.grid() is None]
            message = "a grid needs every parameter's values: a step or choices"
            issues.append(SpecIssue(f"parameters.{stepless[0]}", message))
        elif (size := math.prod(len(v) for v in space.values())) > spec.max_trials:
            message = f"the grid has {size} points, more than max_trials={spec.max_trials}"
            issues.append(SpecIssue("max_trials", message))
    if spec.pruner.name != "none":
        if "hyperparameters.epochs" in spec.parameters:
            message = "the epoch is the pruner's resource: search the epochs without a pruner"
            issues.append(SpecIssue("parameters.hyperparameters.epochs", message))
        if spec.pruner.min_resource > spec.epochs:
            message = f"above the job's {spec.epochs} epochs"
            issues.append(SpecIssue("pruner.min_resource", message))
    running_quota = tenants.quota(session.get(Tenant, tenant_id), "max_running_jobs")
    if spec.max_parallel_trials > running_quota:
        message = f"above the tenant's quota of {running_quota} running jobs"
        issues.append(SpecIssue("max_parallel_trials", message))
    return issues


def _parameter_issues(
    session: Session, tenant_id: str, spec: SweepSpec, path: str, values: list[Any]
) -> list[SpecIssue]:
    field = f"parameters.{path}"
    for value in values:
        try:
            job = _job_spec.validate_python(spec.job_with({path: value}))
        except ValueError as error:  # a path through a value that is not an object
            errors = error.errors() if isinstance(error, ValidationError) else None
            detail = errors[0]["msg"] if errors else str(error)
            where = ".".join(str(part) for part in errors[0]["loc"]) if errors else path
            return [SpecIssue(field, f"the job spec refuses {value!r} at {where}: {detail}")]
        for issue in jobs.spec_issues(session, tenant_id, job):
            return [
                SpecIssue(field, f"the job spec refuses {value!r}: {issue.field}: {issue.message}")
            ]
    return []


def create_sweep(session: Session, tenant_id: str, spec: SweepSpec) -> Sweep:
    """Check and record the sweep; a base model named by a registered version
    (`name@alias`) is recorded by its id, so that every trial starts from the same model."""
    spec = spec.model_copy(update={"job": jobs.with_base_resolved(session, tenant_id, spec.job)})
    issues = check(session, tenant_id, spec)
    if issues:
        raise InvalidInput(issues)
    sweep = Sweep(
        id=new_id("sweep"),
        tenant_id=tenant_id,
        name=spec.name,
        status="queued",
        spec=spec.model_dump(mode="json"),
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, tenant_id: str, sweep_id: str) -> Sweep:
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.tenant_id == tenant_id))
    if sweep is None:
        raise NotFound("sweep", sweep_id)
    return sweep


def list_sweeps(session: Session, tenant_id: str, limit: int, cursor: str | None):
    stmt = select(Sweep).where(Sweep.tenant_id == tenant_id)
    return pagination.newest_first(session, stmt, Sweep, limit, cursor)


def cancel_sweep(session: Session, tenant_id: str, sweep_id: str) -> Sweep:
    """Start no more trials and cancel the running ones; the study learns at `advance`."""
    sweep = get_sweep(session, tenant_id, sweep_id)
    stopped = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(ACTIVE))
        .values(status="cancelled", finished_at=utcnow())
    )
    if stopped.rowcount != 1:
        raise Conflict(f"sweep {sweep_id} is already {sweep.status}")
    webhooks.emit_sweep(session, sweep_id)
    for job in session.scalars(
        select(Job).where(Job.sweep_id == sweep_id, Job.status.in_(job_state.CANCELLABLE))
    ):
        job_state.cancel(session, job)
    session.refresh(sweep)
    return sweep


# Driving the study


def advance(sweep_id: str) -> None:
    """Bring the study and the sweep's jobs in line; safe from any process, at any time."""
    with session_scope() as session:
        session.execute(update(Sweep).where(Sweep.id == sweep_id).values(dirty=True))
    if not _take_the_wheel(sweep_id):
        return  # its driver will see `dirty` and go round once more
    try:
        while True:
            _drive(sweep_id)
            with session_scope() as session:
                released = session.execute(
                    update(Sweep)
                    .where(Sweep.id == sweep_id, Sweep.dirty.is_(False))
                    .values(driven_until=None)
                ).rowcount
                if not released:
                    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(dirty=False))
            if released:
                return
    except BaseException:
        with session_scope() as session:
            session.execute(update(Sweep).where(Sweep.id == sweep_id).values(driven_until=None))
        raise


def advance_all() -> None:
    """The reconciler's pass: every sweep not yet over, in case a process died mid-way."""
    # A cancelled sweep whose study still has running trials: the advance after the cancel
    # did not happen (the API died first) or did not finish.
    untold = (
        select(Sweep.id)
        .join(OptunaStudy, OptunaStudy.study_name == Sweep.id)
        .join(OptunaTrial, OptunaTrial.study_id == OptunaStudy.study_id)
        .where(Sweep.status == "cancelled", OptunaTrial.state == TrialState.RUNNING)
    )
    with session_scope() as session:
        ids = list(session.scalars(select(Sweep.id).where(Sweep.status.in_(ACTIVE)).union(untold)))
    for sweep_id in ids:
        try:
            advance(sweep_id)
        except Exception:
            log.exception("sweep %s: advancing failed; the next pass tries again", sweep_id)


def _take_the_wheel(sweep_id: str) -> bool:
    now = utcnow()
    with session_scope() as session:
        return (
            session.execute(
                update(Sweep)
                .where(
                    Sweep.id == sweep_id,
                    (Sweep.driven_until.is_(None)) | (Sweep.driven_until < now),
                )
                .values(driven_until=now + DRIVER_LEASE, dirty=False)
            ).rowcount
            == 1
        )


def _drive(sweep_id: str) -> None:
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        spec, status, tenant_id = (
            SweepSpec.model_validate(sweep.spec),
            sweep.status,
            sweep.tenant_id,
        )
        trial_jobs = {
            job.trial_number: (job.status, dict(job.metrics))
            for job in session.scalars(select(Job).where(Job.sweep_id == sweep_id))
        }
    study = _study(sweep_id, spec)
    # Telling with the grid sampler would end in `Study.stop()`, which Optuna allows only
    # inside `optimize`: tells go through a sampler that does nothing after a trial.
    study.sampler = optuna.samplers.RandomSampler()
    running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state not in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if trial.number not in trial_jobs:  # asked for, but its job never made
            queued = status != "cancelled" and _queue_trial(
                study, spec, tenant_id, trial.number, trial.params
            )
            if not queued:
                _tell_failed(study, trial.number, "its job could not be created")
                continue
            running += 1
        elif trial_jobs[trial.number][0] in job_state.TERMINAL:
            _tell(study, spec, trial.number, *trial_jobs[trial.number])
        else:
            running += 1
    if status != "cancelled":
        count = len(study.get_trials(deepcopy=False))
        while count < spec.trial_count and running < spec.max_parallel_trials:
            study.sampler = spec.make_sampler(count)
            trial = study.ask(spec.distributions())
            count += 1
            if _queue_trial(study, spec, tenant_id, trial.number, trial.params):
                running += 1
            else:
                break  # over the tenant's quota: the next pass asks again
    _update_status(sweep_id, spec, study)


def _queue_trial(
    study: optuna.Study, spec: SweepSpec, tenant_id: str, number: int, params: dict[str, Any]
) -> bool:
    """Create and send the trial's job; False when the tenant's quota refuses it for now. A
    spec the job validation refuses (values between the extremes checked at submission) fails
    the trial."""
    name = f"{spec.name or study.study_name} trial {number}"
    job_spec = _job_spec.validate_python(spec.job_with(params) | {"name": name[:200]})
    try:
        with session_scope() as session:
            job = jobs.create_job(session, tenant_id, job_spec, study.study_name, number)
            job_id = job.id
    except TooManyRequests:
        return False
    except InvalidInput as invalid:
        _tell_failed(study, number, invalid.detail)
        return True
    except IntegrityError:  # made by a driver before this one: the unique trial index
        return True
    dispatch.send([job_id])
    return True


def _tell(study: optuna.Study, spec: SweepSpec, number: int, status: str, metrics: dict) -> None:
    if status == "succeeded":
        value = metrics.get(spec.objective.final_key)
        if value is None or not math.isfinite(value):
            _tell_failed(study, number, f"the job reported no {spec.objective.final_key}")
        else:
            study.tell(number, value, skip_if_finished=True)
    elif status == "pruned":
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        _tell_failed(study, number, f"its job ended {status}")


def _tell_failed(study: optuna.Study, number: int, reason: str) -> None:
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, "failure", reason)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def _update_status(sweep_id: str, spec: SweepSpec, study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    if len(finished) >= spec.trial_count:
        complete = any(t.state == TrialState.COMPLETE for t in finished)
        status, done = ("succeeded" if complete else "failed"), True
    else:
        status, done = ("running" if trials else "queued"), False
    with session_scope() as session:
        changed = session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status.in_(ACTIVE))
            .values(status=status, finished_at=utcnow() if done else None)
        )
        if done and changed.rowcount == 1:
            webhooks.emit_sweep(session, sweep_id)


class Verdict(enum.Enum):
    """What a trial's pruner says after its latest epochs."""

    GO_ON = "go on"
    PRUNED = "pruned"  # the job has ended `pruned`: stop its trainer
    FINISH = "finish"  # pruned, its model kept: end training where it is, then end `pruned`


def report(job_id: str, attempt: int, epoch_points: list[dict]) -> tuple[Verdict, int | None]:
    """A trial's objective after each epoch, for its pruner; the verdict and, when pruned,
    the epoch it was pruned after. Reporting an epoch twice (a resumed attempt) is ignored."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.sweep_id is None:
            return Verdict.GO_ON, None
        sweep_id, number = job.sweep_id, job.trial_number
        spec = SweepSpec.model_validate(session.get(Sweep, sweep_id).spec)
    objective = spec.objective
    values = [
        (p["epoch"], p["value"])
        for p in epoch_points
        if p["name"] == objective.metric and p["split"] == objective.split
    ]
    if not values:
        return Verdict.GO_ON, None
    study = _study(sweep_id, spec)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = optuna.Trial(study, trial_id)
    stored = study._storage.get_trial(trial_id)
    if PRUNED_AFTER in stored.system_attrs:  # decided before this attempt resumed the trial
        return Verdict.FINISH, stored.system_attrs[PRUNED_AFTER]
    reported = stored.intermediate_values
    # Epoch by epoch, each judged at its own rung: epochs that arrive together (a trainer
    # ahead of its supervisor) must not enter a rung with a later epoch's value.
    for epoch, value in sorted(values):
        if epoch in reported:
            continue
        trial.report(value, epoch)
        if trial.should_prune():
            break
    else:
        return Verdict.GO_ON, None
    if spec.pruner.keep_models:
        # Kept with the trial: an attempt that resumes it (its worker gone) finishes it too.
        study._storage.set_trial_system_attr(trial_id, PRUNED_AFTER, epoch)
        log.info("job %s: trial %d of sweep %s pruned, its model kept", job_id, number, sweep_id)
        return Verdict.FINISH, epoch
    with session_scope() as session:
        pruned = job_state.prune(session, job_id, attempt, epoch)
    if pruned:
        log.info("job %s: trial %d of sweep %s pruned", job_id, number, sweep_id)
    return (Verdict.PRUNED, epoch) if pruned else (Verdict.GO_ON, None)


# Reading


def to_out(
    session: Session,
    sweep: Sweep,
    with_importances: bool = False,
    trials: list[optuna.trial.FrozenTrial] | None = None,
) -> SweepOut:
    """The sweep as the API shows it, from `trials` when the caller has read them already."""
    spec = SweepSpec.model_validate(sweep.spec)
    trials = _trials(sweep.id) if trials is None else trials
    counts = TrialCounts()
    for trial in trials:
        name = STATE_NAMES[trial.state]
        setattr(counts, name, getattr(counts, name) + 1)
    best, importances = None, None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        better = max if spec.objective.study_direction == "maximize" else min
        top = better(complete, key=lambda trial: trial.value)
        job = session.scalar(
            select(Job).where(Job.sweep_id == sweep.id, Job.trial_number == top.number)
        )
        test = {
            k.removeprefix("test_"): v
            for k, v in (job.metrics if job else {}).items()
            if k.startswith("test_")
        }
        best = BestTrial(
            number=top.number,
            params=top.params,
            value=top.value,
            job_id=job.id if job else None,
            model_id=job.result_model_id if job else None,
            test_metrics=test,
        )
    if with_importances and len(complete) >= IMPORTANCE_AFTER:
        try:
            importances = optuna.importance.get_param_importances(
                optuna.load_study(study_name=sweep.id, storage=storage())
            )
        except (RuntimeError, ValueError):  # e.g. a parameter that never varied
            importances = None
    return SweepOut(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        trials=counts,
        best_trial=best,
        direction=spec.objective.study_direction,
        importances=importances,
        spec=sweep.spec,
    )


def trials_of(
    session: Session, sweep: Sweep, trials: list[optuna.trial.FrozenTrial] | None = None
) -> list[TrialOut]:
    job_ids = dict(
        session.execute(select(Job.trial_number, Job.id).where(Job.sweep_id == sweep.id)).all()
    )
    return [
        TrialOut(
            number=trial.number,
            job_id=job_ids.get(trial.number),
            params=trial.params,
            state=STATE_NAMES[trial.state],
            value=trial.value,
            intermediate_values={int(k): v for k, v in trial.intermediate_values.items()},
        )
        for trial in (_trials(sweep.id) if trials is None else trials)
    ]


def page_out(session: Session, rows: list[Sweep], next_cursor: str | None) -> Page[SweepOut]:
    return Page(data=[to_out(session, sweep) for sweep in rows], next_cursor=next_cursor)


# The live stream

POLL_SECONDS = 1.0


def _snapshot(tenant_id: str, sweep_id: str) -> tuple[SweepOut, list[TrialOut]]:
    with session_scope() as session:
        sweep = get_sweep(session, tenant_id, sweep_id)
        trials = _trials(sweep_id)  # read once: the sweep's counts and the trials agree
        return to_out(session, sweep, trials=trials), trials_of(session, sweep, trials)


async def stream(tenant_id: str, sweep_id: str) -> AsyncIterator[ServerSentEvent]:
    """`status` whenever the sweep changes, `trial` whenever a trial does (it starts, reports an
    epoch or ends), and `end` once the sweep is over and its trials were sent."""
    sent_sweep, sent_trials = None, {}
    while True:
        sweep, trials = await asyncio.to_thread(_snapshot, tenant_id, sweep_id)
        for trial in trials:
            if sent_trials.get(trial.number) != trial:
                sent_trials[trial.number] = trial
                yield ServerSentEvent(trial.model_dump_json(), event="trial")
        if sweep != sent_sweep:
            sent_sweep = sweep
            yield ServerSentEvent(sweep.model_dump_json(), event="status")
        if sweep.status not in ACTIVE and all(t.state != "running" for t in trials):
            yield ServerSentEvent(sweep.model_dump_json(), event="end")
            return
        await asyncio.sleep(POLL_SECONDS)
