from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from app.deps import CallerDep, IdempotencyKeyHeader, SessionDep
from app.schemas import (
    DatasetOut,
    DatasetPreview,
    DatasetTask,
    Page,
    RankModelsOut,
    RankModelsRequest,
    RegisterDatasetRequest,
)
from app.services import datasets, idempotency, transferability
from trainer.spec import Text

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201)
def upload_dataset(
    session: SessionDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description=".npz, .csv, .parquet, .jsonl or .zip")],
    name: Annotated[Text, Form(min_length=1, max_length=200)],
    task: Annotated[DatasetTask, Form()],
    label_column: Annotated[
        Text,
        Form(
            min_length=1,
            max_length=200,
            description="csv/parquet: the label's column; regression: the numeric target "
            "columns, comma-separated; multilabel: a column of `;`-separated labels (jsonl "
            "gives each line's `labels` list; a zip of images or clips, the `labels` column "
            "of its `labels.csv`); forecasting: the series columns, "
            "comma-separated",
        ),
    ] = "label",
    time_column: Annotated[
        Text | None,
        Form(
            min_length=1,
            max_length=200,
            description="forecasting: the column of the rows' times (dates or numbers); the "
            "rows are sorted by it, the other columns are covariates",
        ),
    ] = None,
    tokenizer: Annotated[
        Text | None,
        Form(
            min_length=1,
            max_length=200,
            description="chat: count the tokens under this model's tokenizer and chat template "
            "(a configured Hugging Face causal LM's name, or a causal_lm model's id or "
            "registered version: `name@alias`, `name/versions/N`)",
        ),
    ] = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DatasetOut:
    """Upload a file; it is checked whole and stored only if it is a valid dataset."""
    print_ = idempotency.fingerprint(
        file.filename, datasets.sha256_of(file.file), name, task, label_column, tokenizer,
        time_column,
    )  # fmt: skip
    response, _created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/datasets",
        idempotency_key,
        print_,
        lambda: datasets.to_out(
            datasets.create_dataset(
                session,
                caller.tenant_id,
                file.file,
                file.filename or "",
                name,
                task,
                label_column,
                tokenizer,
                time_column,
            )
        ),
    )
    return DatasetOut.model_validate(response)


@router.post("/references", status_code=201)
def register_dataset(
    body: RegisterDatasetRequest,
    session: SessionDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DatasetOut:
    """Register a dataset by reference: the `.jsonl` or `.parquet` shards of text examples
    under an S3 prefix that the operator allows. Every row of every shard is checked as a
    stream (as an upload is), and each shard recorded with its size, ETag and rows; nothing is
    copied. Jobs stream it (`causal_lm`) and read exactly what was checked: a shard changed
    since fails the job."""
    response, _created = idempotency.once(
        session,
        f"{caller.tenant_id} POST /v1/datasets/references",
        idempotency_key,
        idempotency.fingerprint(body.model_dump_json()),
        lambda: datasets.to_out(
            datasets.register_dataset(session, caller.tenant_id, body.name, body.task, body.uri)
        ),
    )
    return DatasetOut.model_validate(response)


@router.get("")
def list_datasets(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    cursor: str | None = None,
) -> Page[DatasetOut]:
    rows, next_cursor = datasets.list_datasets(session, caller.tenant_id, limit, cursor)
    return Page(data=[datasets.to_out(d) for d in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, session: SessionDep, caller: CallerDep) -> DatasetOut:
    return datasets.to_out(datasets.get_dataset(session, caller.tenant_id, dataset_id))


@router.get("/{dataset_id}/preview")
def preview_dataset(
    dataset_id: str,
    session: SessionDep,
    caller: CallerDep,
    count: Annotated[int, Query(ge=1, le=50)] = 5,
) -> DatasetPreview:
    """The first rows (tables, texts) or images (as PNG, base64) of the dataset."""
    dataset = datasets.get_dataset(session, caller.tenant_id, dataset_id)
    return datasets.preview_dataset(dataset, count)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, caller: CallerDep) -> Response:
    """Delete a dataset; `409` while a queued or running job reads it."""
    datasets.delete_dataset(session, caller.tenant_id, dataset_id)
    return Response(status_code=204)


@router.post("/{dataset_id}/rank-models")
async def rank_models(dataset_id: str, body: RankModelsRequest, caller: CallerDep) -> RankModelsOut:
    """Candidate bases for a labelled dataset (an upload's id, or a built-in such as
    `builtin:digits`), best first by transferability score (LogME), all scored on the same
    examples before any training: `model_ids` (by default the newest models that read the
    dataset's inputs) and `models`, architectures as a job's `model` starts them (the
    from-scratch baseline)."""
    return await transferability.rank_models(caller.tenant_id, dataset_id, body)
