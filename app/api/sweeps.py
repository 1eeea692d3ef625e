import asyncio
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Query
from sse_starlette import EventSourceResponse

from app.db import session_scope
from app.deps import CallerDep, IdempotencyKeyHeader, SessionDep
from app.schemas import Page, SweepOut, TrialOut
from app.services import idempotency, sweeps
from app.sweep_spec import SweepSpec

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("", status_code=201)
def create_sweep(
    spec: Annotated[SweepSpec, Body()],
    session: SessionDep,
    caller: CallerDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKeyHeader = None,
) -> SweepOut:
    """A hyperparameter search whose trials run as jobs (`sweep_id`, `trial_number`)."""
    response, created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/sweeps",
        idempotency_key,
        idempotency.fingerprint(spec.model_dump(mode="json")),
        lambda: sweeps.to_out(session, sweeps.create_sweep(session, caller.tenant_id, spec)),
    )
    session.commit()  # committed before its first trials are asked for
    if created:
        background.add_task(sweeps.advance, response["id"])
    return SweepOut.model_validate(response)


@router.get("")
def list_sweeps(
    session: SessionDep, caller: CallerDep, limit: Limit = 20, cursor: str | None = None
) -> Page[SweepOut]:
    rows, next_cursor = sweeps.list_sweeps(session, caller.tenant_id, limit, cursor)
    return sweeps.page_out(session, rows, next_cursor)


@router.get("/{sweep_id}")
def get_sweep(sweep_id: str, session: SessionDep, caller: CallerDep) -> SweepOut:
    sweep = sweeps.get_sweep(session, caller.tenant_id, sweep_id)
    return sweeps.to_out(session, sweep, with_importances=True)


@router.get("/{sweep_id}/trials")
def sweep_trials(sweep_id: str, session: SessionDep, caller: CallerDep) -> Page[TrialOut]:
    sweep = sweeps.get_sweep(session, caller.tenant_id, sweep_id)
    return Page(data=sweeps.trials_of(session, sweep), next_cursor=None)


@router.post("/{sweep_id}/cancel")
def cancel_sweep(
    sweep_id: str, session: SessionDep, caller: CallerDep, background: BackgroundTasks
) -> SweepOut:
    """Start no more trials and cancel the running ones."""
    sweep = sweeps.cancel_sweep(session, caller.tenant_id, sweep_id)
    answer = sweeps.to_out(session, sweep)  # read in the transaction, before it ends
    session.commit()
    background.add_task(sweeps.advance, sweep.id)
    return answer


STREAM_DESCRIPTION = """Server-Sent Events: `status` (the Sweep, first and on every change),
`trial` (a Trial, when it starts, reports an epoch and ends), then `end` (the final Sweep)."""


@router.get(
    "/{sweep_id}/stream",
    description=STREAM_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_sweep(sweep_id: str, caller: CallerDep) -> EventSourceResponse:
    def check() -> None:
        with session_scope() as session:
            sweeps.get_sweep(session, caller.tenant_id, sweep_id)

    await asyncio.to_thread(check)
    return EventSourceResponse(sweeps.stream(caller.tenant_id, sweep_id), ping=15)
