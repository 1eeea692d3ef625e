"""OpenAI's fine-tuning jobs API over tunery's jobs (`app.services.openai_fine_tuning`): with
`OpenAI(base_url="<tunery>/v1", api_key="<tunery API key>")`, `client.fine_tuning.jobs` creates,
lists, follows and cancels `sft` and `dpo` jobs, which `/v1/jobs` shows too, and the fine-tuned
model answers `client.chat.completions`. Errors come in OpenAI's shape
(`app.problems.OPENAI_PATHS`)."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request

from app.deps import CallerDep, IdempotencyKeyHeader, SessionDep
from app.openai_schemas import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    FineTuningJobRequest,
    OpenAIList,
)
from app.schemas import OpenAIError
from app.services import dispatch, idempotency, openai_fine_tuning

router = APIRouter(
    prefix="/v1/fine_tuning/jobs",
    tags=["openai"],
    responses={status: {"model": OpenAIError} for status in (400, 401, 404, 409)},
)

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("")
def create_fine_tuning_job(
    body: FineTuningJobRequest,
    session: SessionDep,
    caller: CallerDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> FineTuningJob:
    """Queue a job fine-tuning `model` on `training_file`; a `400` naming the parameter at
    fault, checked as `POST /v1/jobs` checks a spec."""
    response, created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/fine_tuning/jobs",
        idempotency_key,
        idempotency.fingerprint(body.model_dump(mode="json")),
        lambda: openai_fine_tuning.to_job(
            openai_fine_tuning.create_job(session, caller.tenant_id, body)
        ),
    )
    session.commit()  # committed before it is sent: a worker must find the job it is woken for
    if created:
        background.add_task(dispatch.send, [response["id"]])
    return FineTuningJob.model_validate(response)


def metadata_filter(request: Request) -> dict[str, str]:
    """OpenAI's `metadata[k]=v` query parameters, as {k: v}."""
    return {
        key.removeprefix("metadata[").removesuffix("]"): value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }


@router.get("")
def list_fine_tuning_jobs(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    after: str | None = None,
    limit: Limit = 20,
) -> OpenAIList[FineTuningJob]:
    """Newest first. `metadata[k]=v` (repeatable) keeps the jobs whose metadata has `k` = `v`."""
    metadata = metadata_filter(request)
    return openai_fine_tuning.list_jobs(session, caller.tenant_id, after, limit, metadata)


@router.get("/{fine_tuning_job_id}")
def get_fine_tuning_job(
    fine_tuning_job_id: str, session: SessionDep, caller: CallerDep
) -> FineTuningJob:
    job = openai_fine_tuning.get_job(session, caller.tenant_id, fine_tuning_job_id)
    return openai_fine_tuning.to_job(job)


@router.post("/{fine_tuning_job_id}/cancel")
def cancel_fine_tuning_job(
    fine_tuning_job_id: str, session: SessionDep, caller: CallerDep
) -> FineTuningJob:
    """A queued or running job -> `cancelled`; a finished one is a `409`."""
    job = openai_fine_tuning.cancel_job(session, caller.tenant_id, fine_tuning_job_id)
    return openai_fine_tuning.to_job(job)


@router.get("/{fine_tuning_job_id}/events")
def list_fine_tuning_events(
    fine_tuning_job_id: str,
    session: SessionDep,
    caller: CallerDep,
    after: str | None = None,
    limit: Limit = 20,
) -> OpenAIList[FineTuningJobEvent]:
    """The job's events (`message`: status changes and log lines) and metric points
    (`metrics`), newest first."""
    return openai_fine_tuning.list_events(
        session, caller.tenant_id, fine_tuning_job_id, after, limit
    )


@router.get("/{fine_tuning_job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    fine_tuning_job_id: str,
    session: SessionDep,
    caller: CallerDep,
    after: str | None = None,
) -> OpenAIList[FineTuningJobCheckpoint]:
    """The job's model as its one, final checkpoint, once it has one: tunery keeps one model
    per job, not one per epoch."""
    return openai_fine_tuning.list_checkpoints(session, caller.tenant_id, fine_tuning_job_id, after)
