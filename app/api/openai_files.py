"""OpenAI's Files API for fine-tuning, over tunery's chat datasets: `client.files.create(file=…,
purpose="fine-tune")` with `OpenAI(base_url="<tunery>/v1", api_key="<tunery API key>")`. Errors
come in OpenAI's shape (`app.problems.OPENAI_PATHS`)."""

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile

from app.deps import CallerDep, IdempotencyKeyHeader, SessionDep
from app.openai_schemas import FileDeleted, OpenAIFile, OpenAIList
from app.schemas import OpenAIError
from app.services import datasets, idempotency, openai_files
from trainer.spec import Text

router = APIRouter(
    prefix="/v1/files",
    tags=["openai"],
    responses={status: {"model": OpenAIError} for status in (400, 401, 404, 409)},
)


@router.post("")
def create_file(
    session: SessionDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="jsonl: chat, prompt/completion or preference")],
    purpose: Annotated[Text, Form(max_length=100, description="`fine-tune`, the only one")],
    idempotency_key: IdempotencyKeyHeader = None,
) -> OpenAIFile:
    """Upload a file to fine-tune on: a dataset of task `chat` (whose id is the file's),
    checked whole; a `400` naming `file` where it is not chat data."""
    print_ = idempotency.fingerprint(file.filename, datasets.sha256_of(file.file), purpose)
    response, _created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/files",
        idempotency_key,
        print_,
        lambda: openai_files.to_file(
            openai_files.create_file(
                session, caller.tenant_id, file.file, file.filename or "", purpose
            )
        ),
    )
    return OpenAIFile.model_validate(response)


@router.get("")
def list_files(
    session: SessionDep,
    caller: CallerDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> OpenAIList[OpenAIFile]:
    """The tenant's files (its chat datasets, whichever route uploaded them), by creation time."""
    return openai_files.list_files(session, caller.tenant_id, purpose, after, limit, order)


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, caller: CallerDep) -> OpenAIFile:
    return openai_files.to_file(openai_files.get_file(session, caller.tenant_id, file_id))


@router.delete("/{file_id}")
def delete_file(file_id: str, session: SessionDep, caller: CallerDep) -> FileDeleted:
    """`409` while a queued or running job reads it."""
    return openai_files.delete_file(session, caller.tenant_id, file_id)
