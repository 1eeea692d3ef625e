"""OpenAI's fine-tuning jobs over tunery's own: a fine-tuning job is a tunery job of kind
`finetune` and method `sft` (OpenAI's `supervised`) or `dpo`, on the same row, whichever route
made it, with the same checks, quotas and tenancy. A request becomes a job spec:

- `model`: a tunery model id (`model_…`, of task `causal_lm`) or a registered version
  (`name@alias`, `name/versions/N`) -> `base_model_id`; any other
  name -> `model: {architecture: hf_causal_lm, params: {base: name}}`, a directory configured
  in `TUNERY_HF_MODEL_DIRS`;
- `training_file`, `validation_file` (files: datasets of task `chat`) -> `data.train`,
  `data.validation`;
- `n_epochs`, `batch_size`, `seed` -> the spec's `epochs`, `batch_size`, `seed`;
  `learning_rate_multiplier` -> `learning_rate` = it x `BASE_LEARNING_RATE`; `beta` -> the
  `dpo` method's; "auto" resolved from the training split's size, as OpenAI resolves it (below);
- `suffix` -> the job's and so its model's name, `ft:<model>:<suffix>`; it and `metadata`
  are kept on the job's row.

The spec's issues come back as OpenAI's 400s naming the request's parameter (`data.train` ->
`training_file`)."""

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from app.models import Dataset, Job, JobEvent, MetricPoint, Model
from app.openai_schemas import (
    BASE_LEARNING_RATE,
    CheckpointMetrics,
    DpoHyperparameters,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobError,
    FineTuningJobEvent,
    FineTuningJobRequest,
    OpenAIList,
    ResolvedDpoHyperparameters,
    ResolvedDpoMethod,
    ResolvedHyperparameters,
    ResolvedMethod,
    ResolvedSupervisedMethod,
    SupervisedHyperparameters,
)
from app.problems import InvalidInput, NotFound
from app.services import jobs, openai_files, registry
from app.services.openai_lists import page_after
from trainer.data import dataset_name
from trainer.methods import dpo
from trainer.spec import FinetuneSpec, SpecIssue

# tunery's methods that fine-tune a causal language model -> OpenAI's method types.
METHOD_TYPES = {"sft": "supervised", "dpo": "dpo"}
METHODS = {method_type: method for method, method_type in METHOD_TYPES.items()}
DEFAULT_BETA = dpo.Params.model_fields["beta"].default

# "auto", as OpenAI resolves it. Epochs: the rule of OpenAI's data-preparation cookbook (its
# "Chat fine-tuning data prep" notebook): 3 epochs, more for a small training set so that the
# model sees about 100 examples (at most 25 epochs), fewer for a large one so that it sees about
# 25,000 (at least 1). Batch size: as OpenAI's fine-tuning guide put it, about 0.2% of the
# training examples, at most 256. Learning rate multiplier: 0.05, 0.1 or 0.2 by batch size
# (OpenAI: larger rates do better with larger batches; the guide names no thresholds, these
# are ours).
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25
AUTO_BATCH_SHARE, MAX_AUTO_BATCH_SIZE = 0.002, 256
AUTO_MULTIPLIERS = ((16, 0.05), (64, 0.1))  # (batch sizes below this, multiplier)
LARGE_BATCH_MULTIPLIER = 0.2


def auto_epochs(train_examples: int) -> int:
    if train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, MIN_TARGET_EXAMPLES // train_examples)
    if train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // train_examples)
    return TARGET_EPOCHS


def auto_batch_size(train_examples: int) -> int:
    return min(MAX_AUTO_BATCH_SIZE, max(1, round(AUTO_BATCH_SHARE * train_examples)))


def auto_multiplier(batch_size: int) -> float:
    return next((m for below, m in AUTO_MULTIPLIERS if batch_size < below), LARGE_BATCH_MULTIPLIER)


def _given_or(value: Any, auto: Any) -> Any:
    return auto if value is None else value


def _rounded(number: float) -> float:
    """Without the float's noise: a multiplier sent as 0.1 reads back as 0.1, and gives a
    learning rate of 3e-05, not 3.0000000000000004e-05."""
    return float(f"{number:.12g}")


# Fields of the job spec -> the request's parameters, for the spec's issues; `{hp}` is where the
# request put its hyperparameters. A field under one of these (`model.params.base`) maps too.
SPEC_PARAMS = {
    "data.train": "training_file",
    "data.validation": "validation_file",
    "data": "training_file",
    "model": "model",
    "base_model_id": "model",
    "hyperparameters.epochs": "{hp}.n_epochs",
    "hyperparameters.batch_size": "{hp}.batch_size",
    "hyperparameters.learning_rate": "{hp}.learning_rate_multiplier",
    "hyperparameters.seed": "seed",
    "method.params.beta": "{hp}.beta",
    "name": "suffix",
}


def _param(field: str, hyperparameters_at: str) -> str:
    """The request's parameter that a spec's field came from (the field itself if none)."""
    for spec_field, param in SPEC_PARAMS.items():
        if field == spec_field or field.startswith(spec_field + "."):
            return param.format(hp=hyperparameters_at)
    return field


def _as_request_issues(issues: list[dict[str, str]], hyperparameters_at: str) -> InvalidInput:
    return InvalidInput(
        [SpecIssue(_param(i["field"], hyperparameters_at), i["message"]) for i in issues]
    )


def _hyperparameters(request: FineTuningJobRequest) -> tuple[str, SupervisedHyperparameters, str]:
    """The method's type, its hyperparameters as asked, and where in the request they are."""
    method_type = request.method.type if request.method is not None else "supervised"
    section = getattr(request.method, method_type, None)
    in_method = section.hyperparameters if section is not None else None
    if in_method is not None and request.hyperparameters is not None:
        message = f"also given in method.{method_type}.hyperparameters: give them once"
        raise InvalidInput([SpecIssue("hyperparameters", message)])
    if in_method is not None:
        return method_type, in_method, f"method.{method_type}.hyperparameters"
    asked = request.hyperparameters or SupervisedHyperparameters()
    return method_type, asked, "hyperparameters"


def _file_in(session: Session, tenant_id: str, file_id: str, param: str) -> Dataset:
    try:
        return openai_files.get_file(session, tenant_id, file_id)
    except NotFound:
        message = f"no file {file_id!r}; upload it with purpose 'fine-tune'"
        raise InvalidInput([SpecIssue(param, message)]) from None


def spec_of(
    session: Session, tenant_id: str, request: FineTuningJobRequest
) -> tuple[dict[str, Any], str]:
    """The job spec the request asks for, "auto" resolved, and where its hyperparameters are."""
    method_type, asked, hyperparameters_at = _hyperparameters(request)
    training = _file_in(session, tenant_id, request.training_file, "training_file")
    data: dict[str, Any] = {"train": training.id}
    examples = training.splits["train"]
    if request.validation_file is not None:
        # As OpenAI does, each file is read whole: all of one to train, of the other to
        # validate (and, as there is no third, to test). Without one, tunery holds out its
        # usual 10% and 20% of the training file to validate and test on.
        validation = _file_in(session, tenant_id, request.validation_file, "validation_file")
        whole = {"dataset": validation.id, "whole": True}
        data = {
            "train": {"dataset": training.id, "whole": True},
            "validation": whole,
            "test": whole,
        }
        examples = training.num_examples
    batch_size = _given_or(asked.batch_size, auto_batch_size(examples))
    multiplier = _given_or(asked.learning_rate_multiplier, auto_multiplier(batch_size))
    hyperparameters = {
        "epochs": _given_or(asked.n_epochs, auto_epochs(examples)),
        "batch_size": batch_size,
        "learning_rate": _rounded(multiplier * BASE_LEARNING_RATE),
    }
    if request.seed is not None:
        hyperparameters["seed"] = request.seed
    params = {}
    if method_type == "dpo":
        beta = asked.beta if isinstance(asked, DpoHyperparameters) else None
        params["beta"] = _given_or(beta, DEFAULT_BETA)
    spec = {
        "kind": "finetune",
        "name": f"ft:{request.model}" + (f":{request.suffix}" if request.suffix else ""),
        "method": {"name": METHODS[method_type], "params": params},
        "data": data,
        "hyperparameters": hyperparameters,
    }
    if registry.names_stored_model(request.model):
        spec["base_model_id"] = request.model
    else:
        spec["model"] = {"architecture": "hf_causal_lm", "params": {"base": request.model}}
    return spec, hyperparameters_at


def create_job(session: Session, tenant_id: str, request: FineTuningJobRequest) -> Job:
    """The tunery job the request asks for, checked and queued as `POST /v1/jobs` does."""
    spec, hyperparameters_at = spec_of(session, tenant_id, request)
    try:
        checked = FinetuneSpec.model_validate(spec)
    except ValidationError as error:
        issues = [
            {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()
        ]
        raise _as_request_issues(issues, hyperparameters_at) from None
    try:
        job = jobs.create_job(session, tenant_id, checked)
    except InvalidInput as error:
        raise _as_request_issues(error.errors, hyperparameters_at) from None
    job.user_metadata, job.suffix = request.metadata, request.suffix
    return job


def of_tenant(tenant_id: str) -> Select:
    """The tenant's jobs that are fine-tuning jobs."""
    method = Job.spec[("method", "name")].as_string()
    return select(Job).where(
        Job.tenant_id == tenant_id, Job.kind == "finetune", method.in_(METHOD_TYPES)
    )


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = session.scalar(of_tenant(tenant_id).where(Job.id == job_id))
    if job is None:
        raise NotFound("fine-tuning job", job_id)
    return job


def list_jobs(
    session: Session, tenant_id: str, after_id: str | None, limit: int, metadata: dict[str, str]
) -> OpenAIList[FineTuningJob]:
    """Newest first; only those whose metadata has every key of `metadata` with its value."""
    query = of_tenant(tenant_id)
    for key, value in metadata.items():
        query = query.where(Job.user_metadata[key].as_string() == value)
    rows, has_more = page_after(session, query, Job, after_id, limit)
    return OpenAIList(data=[to_job(row) for row in rows], has_more=has_more)


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """As `POST /v1/jobs/{id}/cancel`: a finished job is a `409`."""
    get_job(session, tenant_id, job_id)
    return jobs.cancel_job(session, tenant_id, job_id)


# OpenAI's names of tunery's metric points' splits and metrics: ("validation", "token_accuracy")
# is `valid_mean_token_accuracy`.
SPLIT_NAMES = {"validation": "valid"}
METRIC_NAMES = {"token_accuracy": "mean_token_accuracy"}
# The job's events and metric points, as one list in time order: at the same time, an event
# before a metric point.
EVENT_SOURCES = {"event": JobEvent, "metric": MetricPoint}
MAX_ROW_ID = 2**63 - 1  # a BIGINT: a larger number sent as a row id is compared to none


def _position(session: Session, job_id: str, event_id: str) -> tuple[datetime, int, int]:
    """The (time, source, row id) of an event this route listed, by which events are ordered."""
    source, _, row_id = event_id.partition("_")
    entity = EVENT_SOURCES.get(source)
    time = None
    if entity is not None and row_id.isascii() and row_id.isdigit() and int(row_id) <= MAX_ROW_ID:
        query = select(entity.time).where(entity.id == int(row_id), entity.job_id == job_id)
        time = session.scalar(query)
    if time is None:
        raise InvalidInput([SpecIssue("after", f"no event {event_id!r} of this job")])
    return time, list(EVENT_SOURCES).index(source), int(row_id)


def _earlier(entity: Any, rank: int, position: tuple[datetime, int, int]) -> Any:
    """Rows of `entity` (the `rank`th source) that come before `position`."""
    time, position_rank, row_id = position
    if rank == position_rank:
        return tuple_(entity.time, entity.id) < (time, row_id)
    return entity.time <= time if rank < position_rank else entity.time < time


def list_events(
    session: Session, tenant_id: str, job_id: str, after_id: str | None, limit: int
) -> OpenAIList[FineTuningJobEvent]:
    """The job's events (type `message`) and metric points (`metrics`, one a point), newest
    first, as OpenAI lists them."""
    job = get_job(session, tenant_id, job_id)
    position = _position(session, job.id, after_id) if after_id is not None else None
    found = []
    for rank, entity in enumerate(EVENT_SOURCES.values()):
        query = select(entity).where(entity.job_id == job.id)
        if position is not None:
            query = query.where(_earlier(entity, rank, position))
        query = query.order_by(entity.time.desc(), entity.id.desc()).limit(limit + 1)
        found += [((row.time, rank, row.id), row) for row in session.scalars(query)]
    found.sort(key=lambda keyed: keyed[0], reverse=True)
    events = [_event(row) for _key, row in found[:limit]]
    return OpenAIList(data=events, has_more=len(found) > limit)


def _event(row: JobEvent | MetricPoint) -> FineTuningJobEvent:
    if isinstance(row, MetricPoint):
        name = f"{SPLIT_NAMES.get(row.split, row.split)}_{METRIC_NAMES.get(row.name, row.name)}"
        return FineTuningJobEvent(
            id=f"metric_{row.id}",
            created_at=_unix(row.time),
            level="info",
            message=f"Step {row.step} (epoch {row.epoch}): {name}={row.value:.6g}",
            type="metrics",
            data={"step": row.step, "epoch": row.epoch, name: row.value},
        )
    level = "info"
    if row.status == "failed":
        level = "error"
    elif row.message.startswith("warning"):
        level = "warn"
    return FineTuningJobEvent(
        id=f"event_{row.id}",
        created_at=_unix(row.time),
        level=level,
        message=row.message,
        type="message",
        data=None,
    )


def list_checkpoints(
    session: Session, tenant_id: str, job_id: str, after_id: str | None
) -> OpenAIList[FineTuningJobCheckpoint]:
    """The job's model, as its final checkpoint: tunery keeps one model per job, not one per
    epoch, so a job has one checkpoint once it made its model (none before, none once the
    model is deleted), and its metrics are the job's final ones."""
    job = get_job(session, tenant_id, job_id)
    model = session.scalar(
        select(Model).where(
            Model.id == job.result_model_id,
            Model.tenant_id == tenant_id,
            Model.deleted_at.is_(None),
        )
    )
    checkpoints = [] if model is None else [_checkpoint(job, model)]
    if after_id is not None:
        if after_id not in [checkpoint.id for checkpoint in checkpoints]:
            raise InvalidInput([SpecIssue("after", f"no checkpoint {after_id!r} of this job")])
        checkpoints = []  # nothing comes after the job's one checkpoint
    return OpenAIList(data=checkpoints, has_more=False)


def _checkpoint(job: Job, model: Model) -> FineTuningJobCheckpoint:
    metrics = job.metrics
    steps = int(metrics.get("steps", job.progress_step))
    return FineTuningJobCheckpoint(
        id=model.id,
        created_at=_unix(model.created_at),
        fine_tuned_model_checkpoint=model.id,
        step_number=steps,
        metrics=CheckpointMetrics(
            step=steps,
            train_loss=metrics.get("train_loss"),
            valid_loss=metrics.get("validation_loss"),
            valid_mean_token_accuracy=metrics.get("validation_token_accuracy"),
        ),
        fine_tuning_job_id=job.id,
    )


def _unix(time: datetime) -> int:
    return int(time.timestamp())


# tunery's statuses by OpenAI's names: the same but for a sweep's pruned trial, stopped early
# by its pruner and not by a fault, and a paused job, which waits to run again (OpenAI's
# statuses have no pause). `validating_files` is never reported: see `FineTuningJob`.
STATUSES = {"pruned": "cancelled", "paused": "queued"}


def to_job(job: Job) -> FineTuningJob:
    spec = FinetuneSpec.model_validate(job.spec)
    hp = spec.hyperparameters
    resolved = ResolvedHyperparameters(
        n_epochs=hp.epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=_rounded(hp.learning_rate / BASE_LEARNING_RATE),
    )
    method_type = METHOD_TYPES[spec.method.name]
    if method_type == "dpo":
        beta = spec.method.params.get("beta", DEFAULT_BETA)
        dpo_hyperparameters = ResolvedDpoHyperparameters(**dict(resolved), beta=beta)
        method = ResolvedMethod(
            type="dpo", dpo=ResolvedDpoMethod(hyperparameters=dpo_hyperparameters)
        )
    else:
        supervised = ResolvedSupervisedMethod(hyperparameters=resolved)
        method = ResolvedMethod(type="supervised", supervised=supervised)
    error = None
    if job.status == "failed" and job.error_type is not None:
        error = FineTuningJobError(code=job.error_type, message=job.error_message or "")
    succeeded = job.status == "succeeded"
    # One pass's trained tokens (what `sft` reports) times the epochs, as OpenAI counts them
    # (over, for a job of tunery's own route that stopped early: `early_stopping_patience`).
    per_epoch = job.metrics.get("trained_tokens")
    return FineTuningJob(
        id=job.id,
        created_at=_unix(job.created_at),
        finished_at=_unix(job.finished_at) if job.finished_at is not None else None,
        model=spec.base_model_id or spec.model.params.get("base", spec.model.architecture),
        fine_tuned_model=job.result_model_id if succeeded else None,
        organization_id=job.tenant_id,
        status=STATUSES.get(job.status, job.status),
        hyperparameters=resolved,
        training_file=dataset_name(spec.data.train),
        validation_file=dataset_name(spec.data.validation) if spec.data.validation else None,
        trained_tokens=int(per_epoch * hp.epochs) if succeeded and per_epoch is not None else None,
        error=error,
        seed=hp.seed,
        metadata=job.user_metadata,
        method=method,
        user_provided_suffix=job.suffix,
    )
