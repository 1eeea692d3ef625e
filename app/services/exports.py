"""The files a model can be downloaded as: its safetensors file, an ONNX export, an archive
of both with the card and a `serve.py` that needs only onnxruntime, and for Hugging Face
encoders a zipped Hugging Face model directory.

Exports are made on first request and stored beside the model in the artifact store (models
never change, so neither do their exports): `models/<id>/model.onnx`, `hf.zip`, `model.zip`.
Each is stored once (`put_new`): when API processes on two machines make the same export at
once, the first stored wins and the other's is dropped, so every machine serves the same bytes.
Its sha256, for the `ETag`, is kept in a sidecar beside the machine's local copy.
"""

import hashlib
import logging
import os
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.models import Model
from app.problems import Conflict
from app.services.model_files import model_file, model_key
from app.storage import get_store
from trainer.export import HF_PREFIXES, export_hf_directory, export_onnx
from trainer.heads import HEADS

SERVE_SCRIPT = Path(__file__).parent.parent / "serving" / "serve.py"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    media_type: str
    filename: str


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _made_once(model: Model, name: str, make: Callable[[Path], None]) -> tuple[Path, str]:
    """The model's export `name`, made by `make(path)` unless it is stored already (one maker
    at a time in this process): a local copy of it, and its sha256."""
    store, key = get_store(), model_key(model.id, name)
    with _lock(key):
        try:
            path = store.local_path(key)
        except FileNotFoundError:
            with tempfile.TemporaryDirectory(prefix="tunery-export-") as scratch:
                made = Path(scratch) / name
                make(made)
                store.put_new(key, made)  # False: another machine's, the same export, won
            path = store.local_path(key)
        return path, _sha256_beside(path)


def _sha256_beside(path: Path) -> str:
    """The sha256 of a file that never changes, kept in a sidecar beside it."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists():
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        partial = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex}.partial")
        partial.write_text(digest)
        os.replace(partial, sidecar)
    return sidecar.read_text()


def _onnx(model: Model) -> tuple[Path, str]:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional-package notices
    return _made_once(model, "model.onnx", lambda out: export_onnx(model_file(model), out))


def _archive(model: Model, onnx: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(model_file(model), "model.safetensors")
        archive.write(onnx, "model.onnx")
        archive.writestr("model_card.json", model.card.model_dump_json(indent=2))
        archive.write(SERVE_SCRIPT, "serve.py")


def _hf_archive(model: Model, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tunery-hf-") as scratch:
        export_hf_directory(model_file(model), Path(scratch))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(scratch).rglob("*")):
                archive.write(path, path.relative_to(scratch).as_posix())


def download(model: Model, fmt: str) -> Download:
    if fmt == "safetensors":
        name = f"{model.id}.safetensors"
        return Download(model_file(model), model.sha256, "application/octet-stream", name)
    if fmt == "hf":
        if model.architecture not in HF_PREFIXES:
            hf = " or ".join(HF_PREFIXES)
            raise Conflict(f"model {model.id} is a {model.architecture} model, not {hf}")
        path, sha256 = _made_once(model, "hf.zip", lambda out: _hf_archive(model, out))
        return Download(path, sha256, "application/zip", f"{model.id}-hf.zip")
    if model.task not in HEADS:
        tasks = ", ".join(HEADS)
        raise Conflict(f"model {model.id} is a {model.task} model; models that export: {tasks}")
    onnx, onnx_sha256 = _onnx(model)
    if fmt == "onnx":
        return Download(onnx, onnx_sha256, "application/octet-stream", f"{model.id}.onnx")
    path, sha256 = _made_once(model, "model.zip", lambda out: _archive(model, onnx, out))
    return Download(path, sha256, "application/zip", f"{model.id}.zip")
