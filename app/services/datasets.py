"""Uploaded datasets: validated whole before anything is stored, stored once by content hash.

An upload is streamed to a temporary file while its sha256 is computed, read and checked by
the training core's readers (the same code the trainer loads it with), then put in the
artifact store and recorded. A file that fails a check leaves no row and no stored file.
A large text upload, and a dataset registered by reference to S3 shards, are checked as a
stream instead, row by row (`trainer.streaming`): never whole in memory.
"""

import hashlib
import itertools
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Dataset, Job, JobDataset, new_id
from app.problems import Conflict, InvalidInput, NotFound
from app.schemas import DatasetOut, DatasetPreview
from app.services import dataset_sources, registry, tenants
from app.services.pagination import newest_first
from app.storage import get_store
from trainer.architectures import hf_causal_lm
from trainer.architectures.hf_causal_lm import HFCausalLMParams
from trainer.card import TrunkCard
from trainer.chat_format import ChatTemplateError, ChatTokenizer
from trainer.data import (
    BUILTIN_DATASETS,
    DatasetInfo,
    LabelledDataset,
    dataset_names,
    describe_builtin,
    read_file_dataset,
)
from trainer.heads import HEADS
from trainer.methods import METHODS
from trainer.readers import (
    DatasetError,
    ReadLimits,
    UnlabelledFormat,
    chat,
    format_of,
    jsonl,
    preview,
)
from trainer.readers.chat import Example, role_counts
from trainer.readers.common import json_safe
from trainer.spec import SpecIssue
from trainer.streaming import DatasetStream, Shard, StreamSummary, scan, shard_rows
from trainer.training import TrainerError
from trainer.validation import NumberedExamples

ACTIVE = ("queued", "running", "paused")  # jobs that will read their datasets again
LABELLED_TASKS = tuple(HEADS)


def head_task(task: str) -> str:
    """The task head (`trainer.heads`) that a dataset task's labels train: its own, or
    classification for the others (whose datasets carry no labels)."""
    return task if task in HEADS else "classification"


CHUNK = 1024 * 1024


def storage_key(sha256: str) -> str:
    return f"datasets/sha256/{sha256}"


def read_limits() -> ReadLimits:
    s = get_settings()
    return ReadLimits(
        max_members=s.max_archive_members,
        max_uncompressed_bytes=s.max_archive_expanded_bytes,
        max_compression_ratio=s.max_compression_ratio,
    )


def _copy_hashing(source: BinaryIO, destination: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(destination, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def sha256_of(upload: BinaryIO) -> str:
    """The upload's hash, read in chunks; the file is left at its start."""
    digest = hashlib.sha256()
    while chunk := upload.read(CHUNK):
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _invalid(error: DatasetError) -> InvalidInput:
    if isinstance(error, UnlabelledFormat):  # the file is right; the task asked of it is not
        message = f"{error.message}; upload the file with task 'chat'"
        return InvalidInput([SpecIssue("task", message)])
    return InvalidInput([SpecIssue("file", str(error))])


CHAT_MODALITIES = ("chat", "preference")
TABLES = ("tabular", "series")  # read from csv or parquet columns, `label_column` naming some


def _series_out(loaded: LabelledDataset, time_column: str) -> dict[str, Any]:
    """What a series' record keeps of how it is read (`SeriesOut`)."""
    table = loaded.series
    return {
        "time_column": time_column,
        "season": table.season,
        "context_length": table.context_length,
        "horizon": table.horizon,
        "part_rows": [len(rows) for rows in table.part_rows().values()],
    }


def _task_mismatch(task: str, modality: str) -> str:
    if task == "chat":
        return (
            f"task 'chat' takes chat, prompt/completion or preference examples (jsonl); "
            f"the file holds {modality} data"
        )
    return f"the file holds {modality} examples; upload it with task 'chat'"


def _role_counts(dataset: LabelledDataset) -> dict[str, int] | None:
    """Messages per role over every split, for chat and preference datasets."""
    if dataset.modality not in CHAT_MODALITIES:
        return None
    return role_counts(e for part in dataset.splits.values() for e in part.examples)


def _tokenizer_card(session: Session, tenant_id: str, tokenizer: str) -> TrunkCard:
    """The trunk card whose tokenizer and chat template count an upload's tokens: the tenant's
    causal_lm model of that id, or the configured Hugging Face causal LM of that name."""
    if registry.names_stored_model(tokenizer):
        model = registry.find_model(session, tenant_id, tokenizer)
        if model is None:
            raise InvalidInput([SpecIssue("tokenizer", f"no model {tokenizer!r}")])
        if model.task != "causal_lm":
            message = f"model {tokenizer} is a {model.task} model; give a causal_lm model"
            raise InvalidInput([SpecIssue("tokenizer", message)])
        return model.card.trunk()
    try:
        params = HFCausalLMParams(base=tokenizer)
    except ValidationError as error:
        raise InvalidInput([SpecIssue("tokenizer", error.errors()[0]["msg"])]) from None
    return TrunkCard(architecture="hf_causal_lm", **hf_causal_lm.trunk_card(params))


def _token_counts(card: TrunkCard, name: str, dataset: LabelledDataset) -> dict[str, Any]:
    """The examples' tokens as fine-tuning reads them: `sft`'s chat examples, `dpo`'s pairs."""
    method = METHODS["dpo" if dataset.modality == "preference" else "sft"]
    tokenizer = ChatTokenizer(card)
    counts = [
        method.example_tokens(tokenizer, example)
        for part in dataset.splits.values()
        for example in part.examples
    ]
    return {"tokenizer": name, "tokens": sum(counts), "longest_example": max(counts)}


def create_dataset(
    session: Session,
    tenant_id: str,
    upload: BinaryIO,
    filename: str,
    name: str,
    task: str,
    label_column: str,
    tokenizer: str | None = None,
    time_column: str | None = None,
) -> Dataset:
    """Check the upload whole, then store and record it; with `tokenizer` (chat data), count
    its tokens under that model's tokenizer."""
    if tokenizer is not None and task != "chat":
        message = "counts the tokens of chat data: give it with task 'chat'"
        raise InvalidInput([SpecIssue("tokenizer", message)])
    if (time_column is None) == (task == "forecasting"):
        message = "a forecasting upload names its time column; other tasks have none"
        raise InvalidInput([SpecIssue("time_column", message)])
    card = None if tokenizer is None else _tokenizer_card(session, tenant_id, tokenizer)
    labelled = task in LABELLED_TASKS
    try:
        fmt = format_of(filename)
    except DatasetError as error:
        raise _invalid(error) from None
    with tempfile.TemporaryDirectory(prefix="tunery-upload-") as scratch:
        path = Path(scratch) / f"upload.{fmt}"
        sha256, size = _copy_hashing(upload, path)
        tenants.check_storage_quota(session, tenant_id, size, "file")
        dataset_id = new_id("ds")
        if card is None and _streams(path, fmt, size, task):
            shard = Shard(url=str(path), format="jsonl", size_bytes=size)
            summary = _scanned([shard], task)
            _store(path, sha256)
            dataset = _streamed_dataset(
                dataset_id, tenant_id, name, task, fmt, summary, sha256, size, None,
                [storage_key(sha256)],
            )  # fmt: skip
            session.add(dataset)
            session.flush()
            return dataset
        try:
            loaded = read_file_dataset(
                dataset_id, path, fmt, labelled, label_column, read_limits(), head_task(task),
                time_column,
            )  # fmt: skip
        except DatasetError as error:
            raise _invalid(error) from None
        if (task == "chat") != (loaded.modality in CHAT_MODALITIES):
            raise InvalidInput([SpecIssue("task", _task_mismatch(task, loaded.modality))])
        try:
            token_counts = None if card is None else _token_counts(card, tokenizer, loaded)
        except ChatTemplateError as error:
            message = f"its chat template cannot read the examples: {error}"
            raise InvalidInput([SpecIssue("tokenizer", message)]) from None
        _store(path, sha256)
    labels = torch.cat([part.y for part in loaded.splits.values()])
    if loaded.task == "multilabel":  # the examples that have each label
        counts = labels.sum(0).long()
    elif loaded.task == "token_classification":  # the words with each tag
        counts = torch.bincount(labels[labels >= 0], minlength=len(loaded.labels))
    else:
        counts = torch.bincount(labels, minlength=len(loaded.labels)) if loaded.labels else []
    targets = list(loaded.targets) or None
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name,
        task=task,
        format=fmt,
        modality=loaded.modality,
        num_examples=sum(len(part) for part in loaded.splits.values()),
        input_shape=list(loaded.input_shape),
        feature_names=list(loaded.feature_names) if loaded.feature_names else None,
        labels=list(loaded.labels),
        targets=targets,
        series=None if loaded.series is None else _series_out(loaded, time_column),
        class_counts={label: int(counts[i]) for i, label in enumerate(loaded.labels)},
        role_counts=_role_counts(loaded),
        token_counts=token_counts,
        splits={part: len(split) for part, split in loaded.splits.items()},
        label_column=label_column if labelled and loaded.modality in TABLES else None,
        sha256=sha256,
        size_bytes=size,
    )
    session.add(dataset)
    session.flush()
    return dataset


def _store(path: Path, sha256: str) -> None:
    store = get_store()
    if not store.exists(storage_key(sha256)):
        store.put(storage_key(sha256), path)


STREAMED_TASKS = ("classification", "multilabel", "pretraining")  # of texts


def _streams(path: Path, fmt: str, size: int, task: str) -> bool:
    """Whether an upload is checked and trained from as a stream: a text file (not chat)
    larger than `TUNERY_STREAM_UPLOADS_OVER_BYTES`."""
    if fmt != "jsonl" or task not in STREAMED_TASKS:
        return False
    if size <= get_settings().stream_uploads_over_bytes:
        return False
    with open(path, "rb") as file:
        try:
            first = next(jsonl.objects(file, limit=1), None)
        except DatasetError:
            return True  # the check says what is wrong, as reading it whole would
    return first is not None and chat.kind_of(first[1]) is None


def _scanned(shards: list[Shard], task: str, where=lambda _i, _shard: "") -> StreamSummary:
    """Every row of the shards checked (`trainer.streaming.scan`); a `DatasetError` is a 422,
    and so is a shard that changes or cannot be read while it is checked."""
    labelled = task in LABELLED_TASKS
    try:
        return scan(shards, labelled, task, where, get_settings().s3_endpoint_url)
    except DatasetError as error:
        raise _invalid(error) from None
    except (TrainerError, OSError) as error:
        raise InvalidInput([SpecIssue("uri", f"cannot read its shards: {error}")]) from None


def _streamed_dataset(
    dataset_id: str,
    tenant_id: str,
    name: str,
    task: str,
    fmt: str,
    summary: StreamSummary,
    sha256: str,
    size: int,
    source: str | None,
    keys: list[str],
) -> Dataset:
    """The record of a dataset checked as a stream: what a file read whole records, and its
    shards (`StreamOut`), by `keys`: where they are kept."""
    shards = [
        {"key": key, **shard.model_dump(exclude={"url"})}
        for key, shard in zip(keys, summary.shards, strict=True)
    ]
    return Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name,
        task=task,
        format=fmt,
        modality="text",
        num_examples=summary.num_examples,
        input_shape=[],
        feature_names=None,
        labels=list(summary.labels),
        class_counts=summary.class_counts,
        splits=summary.splits,
        label_column=None,
        sha256=sha256,
        size_bytes=size,
        stream={"source": source, "drawn": list(summary.drawn), "shards": shards},
    )


def register_dataset(session: Session, tenant_id: str, name: str, task: str, uri: str) -> Dataset:
    """A dataset of the shards under an S3 prefix (`app.services.dataset_sources`), each row
    of each checked as a stream, recorded with each shard's size, ETag and rows so that its
    jobs read exactly what was checked. Nothing is copied; its `sha256` is that of the list
    of its shards (keys, sizes, ETags)."""
    prefix = dataset_sources.allowed_prefix(uri)
    shards = dataset_sources.list_shards(prefix)
    where = lambda _i, shard: f"shard '{shard.url.removeprefix(prefix)}', "  # noqa: E731
    summary = _scanned(shards, task, where)
    manifest = "\n".join(f"{s.url} {s.size_bytes} {s.etag}" for s in shards)
    sha256 = hashlib.sha256(manifest.encode()).hexdigest()
    size = sum(shard.size_bytes for shard in shards)
    dataset = _streamed_dataset(
        new_id("ds"), tenant_id, name, task, shards[0].format, summary, sha256, size, prefix,
        [shard.url for shard in shards],
    )  # fmt: skip
    session.add(dataset)
    session.flush()
    return dataset


def dataset_stream(dataset: Dataset) -> DatasetStream:
    """A streamed dataset as its trainer reads it: an upload from its local copy, registered
    shards from S3, each as it was checked."""
    shards = tuple(
        Shard(
            url=str(get_store().local_path(shard["key"]).resolve())
            if dataset.stream["source"] is None
            else shard["key"],
            **{k: v for k, v in shard.items() if k != "key"},
        )
        for shard in dataset.stream["shards"]
    )
    return DatasetStream(
        shards=shards,
        drawn=tuple(dataset.stream["drawn"]),
        s3_endpoint_url=get_settings().s3_endpoint_url,
        labels=tuple(dataset.labels),  # as checking every row found them
        task=head_task(dataset.task),
    )


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )
    if dataset is None:
        raise NotFound("dataset", dataset_id)
    return dataset


def list_datasets(session: Session, tenant_id: str, limit: int, cursor: str | None):
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id)
    return newest_first(session, stmt, Dataset, limit, cursor)


def dataset_file(dataset: Dataset) -> Path:
    return get_store().local_path(storage_key(dataset.sha256))


def load_labelled(dataset: Dataset) -> LabelledDataset:
    """A labelled upload, read from its stored file by the trainer's readers, as a job reads it."""
    if dataset.stream is not None:
        message = f"{dataset.id} is streamed (too large to read whole): it cannot be scored"
        raise InvalidInput([SpecIssue("dataset", message)])
    return read_file_dataset(
        dataset.id,
        dataset_file(dataset),
        dataset.format,
        True,
        dataset.label_column or "label",
        read_limits(),
        head_task(dataset.task),
        dataset.series and dataset.series["time_column"],
    )


def preview_dataset(dataset: Dataset, count: int) -> DatasetPreview:
    if dataset.stream is not None:  # the first rows of its first shard
        stream = dataset_stream(dataset)
        rows = itertools.islice(shard_rows(stream.shards[0], "", stream.s3_endpoint_url), count)
        return DatasetPreview.model_validate({"rows": [json_safe(f) for _w, f in rows]})
    label_column = dataset.label_column or "label"
    shown = preview(dataset_file(dataset), dataset.format, label_column, count, read_limits())
    return DatasetPreview.model_validate(shown)


def delete_dataset(session: Session, tenant_id: str, dataset_id: str) -> None:
    dataset = get_dataset(session, tenant_id, dataset_id)
    users = session.scalars(
        select(Job.id)
        .join(JobDataset, JobDataset.job_id == Job.id)
        .where(JobDataset.dataset_id == dataset_id, Job.status.in_(ACTIVE))
    ).all()
    if users:
        raise Conflict(f"dataset {dataset_id} is in use by {', '.join(users)}; cancel them first")
    session.delete(dataset)
    session.flush()
    others = session.scalar(select(Dataset.id).where(Dataset.sha256 == dataset.sha256).limit(1))
    registered = dataset.stream is not None and dataset.stream["source"] is not None
    if others is None and not registered:  # a registered dataset's shards are not ours
        get_store().delete(storage_key(dataset.sha256))


def describer(session: Session, tenant_id: str):
    """Looks datasets up for job-spec checks: built-ins, then the tenant's uploads by id."""

    def describe(name: str) -> DatasetInfo | None:
        builtin = describe_builtin(name)
        if builtin is not None:
            return builtin
        if not name.startswith("ds_"):
            return None
        row = session.scalar(
            select(Dataset).where(Dataset.id == name, Dataset.tenant_id == tenant_id)
        )
        if row is None:
            return None
        series = row.series or {}
        return DatasetInfo(
            row.id, row.modality, tuple(row.input_shape), tuple(row.labels),
            head_task(row.task), tuple(row.targets or ()), series.get("horizon", 0),
            tuple(series.get("part_rows", ())), row.stream is not None,
        )  # fmt: skip

    return describe


def numbered_examples(session: Session, tenant_id: str) -> NumberedExamples:
    """Looks the chat and preference examples of the tenant's uploads up by id, with their
    line numbers, for the checks at submission that tokenize them; None for other datasets."""

    def examples(name: str) -> list[tuple[int, Example]] | None:
        row = session.scalar(
            select(Dataset).where(Dataset.id == name, Dataset.tenant_id == tenant_id)
        )
        if row is None or row.modality not in CHAT_MODALITIES:
            return None
        return jsonl.numbered_examples(dataset_file(row))

    return examples


def record_job_datasets(session: Session, job_id: str, data: object) -> None:
    for name in dataset_names(data):
        if name not in BUILTIN_DATASETS:
            session.add(JobDataset(job_id=job_id, dataset_id=name))


def to_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset)
