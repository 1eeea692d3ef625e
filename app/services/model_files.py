"""Where model files live: `<artifact_dir>/models/<id>/model.safetensors`, with their exports
beside them. A file is copied in under a temporary name and renamed, so it appears whole."""

import hashlib
import os
import shutil
from pathlib import Path

from app.config import get_settings
from app.models import Model
from trainer.card import ModelCard

MODEL_FILE = "model.safetensors"


def model_file(model: Model) -> Path:
    return get_settings().artifact_dir / model.path


def store_model_file(source: Path, model_id: str) -> tuple[str, str, int]:
    """Copy `source` in as model `model_id`'s file: its relative path, sha256 and size."""
    relative = Path("models") / model_id / MODEL_FILE
    target = get_settings().artifact_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    with open(target, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: models can be large
    return str(relative), sha256, target.stat().st_size


def model_from_card(
    card: ModelCard,
    file: Path,
    tenant_id: str,
    source_job_id: str | None = None,
    datasets: dict[str, str | None] | None = None,
) -> Model:
    """Copy `file` in as the model its card names (`model_id`) and make the model's row, not
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
