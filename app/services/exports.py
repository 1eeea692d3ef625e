"""The files a model can be downloaded as: its safetensors file, an ONNX export, an archive
of both with the card and a `serve.py` that needs only onnxruntime, and for Hugging Face
encoders a zipped Hugging Face model directory.

Exports are made on first request and kept beside the model (models never change), each
written under a temporary name and renamed, with its sha256 in a sidecar for the `ETag`.
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
from app.services.model_files import model_file
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


def _made_once(path: Path, make: Callable[[Path], None]) -> str:
    """Make `path` unless it exists (one maker at a time); its sha256."""
    sidecar = path.with_name(path.name + ".sha256")
    with _lock(str(path)):
        if not sidecar.exists():
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
            try:
                make(partial)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
            with open(path, "rb") as f:
                sidecar.write_text(hashlib.file_digest(f, "sha256").hexdigest())
    return sidecar.read_text()


def _onnx(model: Model) -> tuple[Path, str]:
    path = model_file(model).with_name("model.onnx")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional-package notices
    return path, _made_once(path, lambda out: export_onnx(model_file(model), out))


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
        path = model_file(model).with_name("hf.zip")
        sha256 = _made_once(path, lambda out: _hf_archive(model, out))
        return Download(path, sha256, "application/zip", f"{model.id}-hf.zip")
    if model.task not in HEADS:
        tasks = ", ".join(HEADS)
        raise Conflict(f"model {model.id} is a {model.task} model; models that export: {tasks}")
    onnx, onnx_sha256 = _onnx(model)
    if fmt == "onnx":
        return Download(onnx, onnx_sha256, "application/octet-stream", f"{model.id}.onnx")
    path = model_file(model).with_name("model.zip")
    sha256 = _made_once(path, lambda out: _archive(model, onnx, out))
    return Download(path, sha256, "application/zip", f"{model.id}.zip")
