"""The model registry: models, their lineage, naming and tagging, deletion, predictions; the
rows and loaded weights of the models served."""

import asyncio
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from anyio import to_thread
from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.models import Job, Model, utcnow
from app.problems import Conflict, InvalidInput, NotFound
from app.schemas import Ancestor, ModelOut, ModelUpdate, PredictResponse
from app.services import registry
from app.services.inference import Batch, L, ModelCache, Predictor
from app.services.model_files import delete_model_files, model_file
from app.services.pagination import newest_first
from trainer.card import ModelCard
from trainer.heads import HEADS
from trainer.spec import SpecIssue

ACTIVE = ("queued", "running", "paused")  # jobs that will read their base model again
MAX_BATCH = 4096
MAX_LINEAGE = 1000  # a guard: parent links cannot form a cycle, but a bug must not hang a request

_cache = ModelCache(get_settings().model_cache_bytes)
# The rows of models served lately (predict, generate), so that a warm request makes no query.
# Keyed by the reference served: a model deleted, or an alias moved, through another API process
# may go on answering here as it did for up to `ttl` seconds.
_rows: TTLCache[tuple[str, str], Model] = TTLCache(maxsize=10_000, ttl=2.0, timer=time.monotonic)
_rows_lock = threading.Lock()


def get_model(session: Session, tenant_id: str, reference: str) -> Model:
    """The tenant's model that `reference` names: its id, `name@alias` or `name/versions/N`
    (`registry.find_model`); 404 when there is none."""
    model = registry.find_model(session, tenant_id, reference)
    if model is None:
        raise NotFound("model", reference)
    return model


def list_models(
    session: Session, tenant_id: str, parent_id: str | None, limit: int, cursor: str | None
) -> tuple[list[Model], str | None]:
    stmt = select(Model).where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
    if parent_id is not None:
        stmt = stmt.where(Model.parent_model_id == parent_id)
    return newest_first(session, stmt, Model, limit, cursor)


def lineage(session: Session, model: Model) -> list[Ancestor]:
    ancestors, parent_id = [], model.parent_model_id
    while parent_id is not None and len(ancestors) < MAX_LINEAGE:
        parent = session.get(Model, parent_id)
        if parent is None or parent.tenant_id != model.tenant_id:
            break
        ancestors.append(
            Ancestor(
                id=parent.id,
                name=parent.name,
                kind=parent.card.kind,
                method=parent.card.method,
                source_job_id=parent.source_job_id,
                deleted=parent.deleted_at is not None,
            )
        )
        parent_id = parent.parent_model_id
    return ancestors[::-1]


def update_model(session: Session, tenant_id: str, model_id: str, update: ModelUpdate) -> Model:
    model = get_model(session, tenant_id, model_id)
    if "name" in update.model_fields_set:
        model.name = update.name
    if update.tags is not None:
        model.tags = sorted(set(update.tags))
    session.flush()
    return model


def delete_model(session: Session, tenant_id: str, reference: str) -> None:
    """Remove its files; the row stays, marked deleted, for its descendants' lineage (and the
    registered versions it is, whose numbers stay taken). `409` while a queued or running job
    starts from it, or an alias points at it."""
    model = get_model(session, tenant_id, reference)
    # Locked before the aliases are read, as `registry.move_alias` locks it before pointing
    # an alias at it: the two cannot interleave.
    session.execute(select(Model.id).where(Model.id == model.id).with_for_update())
    aliases = registry.aliases_of(session, model.id)
    if aliases:
        raise Conflict(
            f"model {model.id} is a registered version that aliases point at: "
            f"{', '.join(aliases)}; move or delete them first"
        )
    users = session.scalars(
        select(Job.id).where(Job.base_model_id == model.id, Job.status.in_(ACTIVE))
    ).all()
    if users:
        raise Conflict(f"model {model.id} is the base of {', '.join(users)}; cancel them first")
    model.deleted_at = utcnow()
    session.flush()
    with _rows_lock:
        for key in list(_rows):  # by its id and by every reference it was served by
            if (row := _rows.get(key)) is not None and row.id == model.id:
                _rows.pop(key, None)
    _cache.drop(model.id)
    delete_model_files(model.id)


def to_out(session: Session, model: Model) -> ModelOut:
    card = model.card
    return ModelOut(
        id=model.id,
        name=model.name,
        tags=model.tags,
        architecture=model.architecture,
        params=card.params,
        task=model.task,
        modality=card.modality,
        input_shape=card.input_shape,
        feature_names=card.feature_names,
        labels=card.labels,
        targets=card.targets,
        columns=card.columns,
        thresholds=card.thresholds,
        metrics=card.metrics,
        kind=card.kind,
        method=card.method,
        spec=card.spec,
        datasets=model.datasets,
        source_job_id=model.source_job_id,
        parent_model_id=model.parent_model_id,
        lineage=lineage(session, model),
        created_at=model.created_at,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
    )


def npy_inputs(body: bytes) -> np.ndarray:
    """A batch sent as one .npy array; never unpickled."""
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidInput([SpecIssue("body", f"not a numeric .npy array: {error}")]) from None
    if array.dtype.kind not in "biuf" or array.ndim == 0 or not 1 <= len(array) <= MAX_BATCH:
        message = (
            f"must be a numeric array of 1 to {MAX_BATCH} inputs, "
            f"not {array.dtype} of shape {array.shape}"
        )
        raise InvalidInput([SpecIssue("inputs", message)])
    return array


def _load_row(tenant_id: str, reference: str) -> Model:
    with session_scope() as session:
        model = get_model(session, tenant_id, reference)
    with _rows_lock:
        _rows[(tenant_id, reference)] = model
    return model


async def served_row(tenant_id: str, reference: str) -> Model:
    """The row of a model to serve (by any reference: an alias too): one served lately, with no
    query, or (in a worker thread) from the database."""
    with _rows_lock:
        model = _rows.get((tenant_id, reference))
    return model or await to_thread.run_sync(_load_row, tenant_id, reference)


def forget_served(tenant_id: str, reference: str) -> None:
    """Read `reference` from the database when it is next served here: its alias moved."""
    with _rows_lock:
        _rows.pop((tenant_id, reference), None)


async def loaded(model: Model, load: Callable[[Path], L]) -> L:
    """The model as `load` makes it from its file: cached, with no thread hop, or loaded (in a
    worker thread, which also fetches the file from a remote store) into the cache that
    predictors and language models share."""
    return _cache.peek(model.id) or await to_thread.run_sync(
        lambda: _cache.get(model.id, model_file(model), load)
    )


def _classified(card: ModelCard, probabilities: torch.Tensor, _batch: Batch) -> dict:
    return {
        "predictions": [card.labels[i] for i in probabilities.argmax(dim=1).tolist()],
        "probabilities": probabilities.tolist(),
        "labels": card.labels,
    }


def _regressed(card: ModelCard, values: torch.Tensor, _batch: Batch) -> dict:
    return {"values": values.tolist(), "targets": card.targets}


def _multilabelled(card: ModelCard, probabilities: torch.Tensor, _batch: Batch) -> dict:
    chosen = (probabilities >= torch.tensor(card.thresholds)).tolist()
    return {
        "label_sets": [[card.labels[i] for i, on in enumerate(row) if on] for row in chosen],
        "probabilities": probabilities.tolist(),
        "labels": card.labels,
        "thresholds": card.thresholds,
    }


def _forecast(card: ModelCard, values: torch.Tensor, _batch: Batch) -> dict:
    """(N, horizon, series) as each input's next values of each series, by name."""
    forecasts = [dict(zip(card.targets, steps.T.tolist(), strict=True)) for steps in values]
    return {"forecasts": forecasts, "targets": card.targets}


def _tagged(card: ModelCard, probabilities: torch.Tensor, batch: Batch) -> dict:
    """(N, tokens, tags) as each input word's tag, read at its first piece."""
    best = probabilities.argmax(-1)
    tags = [
        [card.labels[i] for i in row[first >= 0].tolist()]
        for row, first in zip(best, batch.first, strict=True)
    ]
    return {"tags": tags, "words": batch.words, "labels": card.labels}


# Predict's answer by the model's task, from what its head serves (`TaskHead.serve`).
ANSWERS: dict[str, Callable[[ModelCard, torch.Tensor, Batch], dict]] = {
    "classification": _classified,
    "regression": _regressed,
    "multilabel": _multilabelled,
    "forecasting": _forecast,
    "token_classification": _tagged,
}


async def predict_by_id(
    tenant_id: str, model_id: str, inputs, return_embeddings: bool
) -> PredictResponse:
    """Warm (its row and weights cached) a prediction makes no query and no thread hop: the
    request waits on the event loop for its model's batcher. Cold, the row and the weights
    are loaded in a worker thread."""
    model = await served_row(tenant_id, model_id)
    if model.task not in HEADS:
        message = f"model {model.id} is a {model.task} model; fine-tune it to predict"
        raise Conflict(message)
    predictor = await loaded(model, Predictor)
    batch = predictor.batch(inputs)
    served, features = await asyncio.wrap_future(predictor.batcher.submit(batch.x))
    embeddings = features.tolist() if return_embeddings else None
    answer = ANSWERS[model.task](model.card, served, batch)
    return PredictResponse(**answer, embeddings=embeddings)
