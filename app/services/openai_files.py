"""OpenAI's Files API over tunery's datasets: a file of purpose `fine-tune` is a dataset of task
`chat` (chat, prompt/completion or preference examples, checked whole as it is uploaded), and
its file id is the dataset's id. Datasets of other tasks are no files: OpenAI's fine-tuning
reads none of them."""

from typing import BinaryIO, Literal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models import Dataset
from app.openai_schemas import FileDeleted, OpenAIFile, OpenAIList
from app.problems import InvalidInput, NotFound
from app.services import datasets
from app.services.openai_lists import page_after
from trainer.spec import SpecIssue

PURPOSE = "fine-tune"
MAX_FILENAME = 200  # a dataset's name


def create_file(
    session: Session, tenant_id: str, upload: BinaryIO, filename: str, purpose: str
) -> Dataset:
    """The upload as a chat dataset named by its file name, or a 400 naming `purpose` or
    `file`."""
    if purpose != PURPOSE:
        message = f"only purpose {PURPOSE!r} is supported: tunery keeps files to fine-tune on"
        raise InvalidInput([SpecIssue("purpose", message)])
    if len(filename) > MAX_FILENAME:
        message = f"the file's name is {len(filename)} characters long; at most {MAX_FILENAME}"
        raise InvalidInput([SpecIssue("file", message)])
    try:
        return datasets.create_dataset(
            session, tenant_id, upload, filename, filename, "chat", "label"
        )
    except InvalidInput as error:  # a file that is not chat data: tunery says its task is wrong
        raise InvalidInput([SpecIssue("file", e["message"]) for e in error.errors]) from None


def of_tenant(tenant_id: str) -> Select:
    """The tenant's datasets that are files."""
    return select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.task == "chat")


def get_file(session: Session, tenant_id: str, file_id: str) -> Dataset:
    dataset = session.scalar(of_tenant(tenant_id).where(Dataset.id == file_id))
    if dataset is None:
        raise NotFound("file", file_id)
    return dataset


def list_files(
    session: Session,
    tenant_id: str,
    purpose: str | None,
    after_id: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> OpenAIList[OpenAIFile]:
    if purpose not in (None, PURPOSE):
        return OpenAIList(data=[], has_more=False)
    query = of_tenant(tenant_id)
    rows, has_more = page_after(session, query, Dataset, after_id, limit, order == "desc")
    return OpenAIList(data=[to_file(row) for row in rows], has_more=has_more)


def delete_file(session: Session, tenant_id: str, file_id: str) -> FileDeleted:
    """As `DELETE /v1/datasets/{id}`: a `409` while a queued or running job reads it."""
    get_file(session, tenant_id, file_id)
    datasets.delete_dataset(session, tenant_id, file_id)
    return FileDeleted(id=file_id, deleted=True)


def to_file(dataset: Dataset) -> OpenAIFile:
    return OpenAIFile(
        id=dataset.id,
        bytes=dataset.size_bytes,
        created_at=int(dataset.created_at.timestamp()),
        filename=dataset.name,
    )
