"""Where model files live: in the artifact store (`app.storage`) under `models/<id>/`, the
weights as `model.safetensors` and their exports beside them. With the default local store
that is `<artifact_dir>/models/<id>/`; with an S3 store every machine reads them through its
cache, so the API serves models that workers on other machines trained.

A model's keys are made from its id, which is new for every model, and are written once
(`put_new`): a cached copy never goes stale. The weights' sha256 is recorded when they are
stored and checked whenever they are fetched onto another machine."""

import hashlib
from pathlib import Path

from app.models import Model
from app.storage import get_store
from trainer.card import ModelCard

MODEL_FILE = "model.safetensors"


def model_key(model_id: str, name: str = MODEL_FILE) -> str:
    """The key of model `model_id`'s weights, or of the export called `name` beside them."""
    return f"models/{model_id}/{name}"


def model_file(model: Model) -> Path:
    """A local copy of the model's weights (fetched once, and checked, from a remote store)."""
    return get_store().local_path(model.path, model.sha256)


def store_model_file(source: Path, model_id: str) -> tuple[str, str, int]:
    """Store `source` as model `model_id`'s weights: their key, sha256 and size."""
    with open(source, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: models can be large
    key = model_key(model_id)
    if not get_store().put_new(key, source):  # ids are new: a stored model is never replaced
        raise FileExistsError(f"{key} is stored already")
    return key, sha256, source.stat().st_size


def delete_model_files(model_id: str) -> None:
    """The model's weights and exports, from the store and this machine's cache."""
    get_store().delete_tree(f"models/{model_id}")


def model_from_card(
    card: ModelCard,
    file: Path,
    tenant_id: str,
    source_job_id: str | None = None,
    datasets: dict[str, str | None] | None = None,
) -> Model:
    """Store `file` as the model its card names (`model_id`) and make the model's row, not
    yet added to a session: a trained model (its job, the datasets it was trained on) or an
    imported one."""
    model_id = card.model_id
    path, sha256, size = store_model_file(file, model_id)
    return Model(
        id=model_id,
        tenant_id=tenant_id,
        source_job_id=source_job_id,
        parent_model_id=card.parent_model_id,
        name=card.name,
        architecture=card.architecture,
        task=card.task,
        card=card,
        path=path,
        sha256=sha256,
        size_bytes=size,
        datasets=datasets or {},
    )
