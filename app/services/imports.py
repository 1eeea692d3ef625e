"""Importing a model made elsewhere: a safetensors file and a card for a registered
architecture. Pickles (`torch.save` files) are refused unread: loading one runs its code."""

import json
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from sqlalchemy.orm import Session
from torch import nn

from app.models import Model, new_id
from app.problems import InvalidInput
from app.services import tenants
from app.services.model_files import model_from_card
from trainer.architectures import ARCHITECTURES, Network
from trainer.architectures.hf_causal_lm import is_causal_lm
from trainer.architectures.hf_encoder import model_dirs
from trainer.artifact import CARD_KEY, save_model
from trainer.card import ModelCard
from trainer.importing import ImportCard, card_issues, rebuild
from trainer.spec import SpecIssue
from trainer.trunk import pretrained_trunk

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
# How pickles begin: the protocol opcode (protocol 2 and later), or the zip that wraps one in
# torch.save's format.
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
REFUSED = (
    "is a pickle (torch.save) file, and pickles are never loaded: loading one runs whatever "
    "code it carries. Save the weights as safetensors instead: "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`"
)


def _refuse(field: str, message: str) -> InvalidInput:
    return InvalidInput([SpecIssue(field, message)])


def _card(card_json: str | None, path: Path) -> ImportCard:
    if card_json is None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            card_json = (f.metadata() or {}).get(CARD_KEY)
        if card_json is None:
            raise _refuse("card", "give a model card: the file's header carries none")
    try:
        return ImportCard.model_validate(json.loads(card_json))
    except json.JSONDecodeError as error:
        raise _refuse("card", f"not valid JSON: {error}") from None
    except ValidationError as error:
        raise InvalidInput([SpecIssue(f, m) for f, m in card_issues(error)]) from None


def import_model(
    session: Session,
    tenant_id: str,
    upload: BinaryIO,
    filename: str,
    card_json: str | None,
    name: str | None,
) -> Model:
    head = upload.read(8)
    if filename.lower().endswith(PICKLE_SUFFIXES) or head.startswith(PICKLE_MAGIC):
        raise _refuse("file", f"{filename or 'the file'} {REFUSED}")
    with tempfile.TemporaryDirectory(prefix="tunery-import-") as scratch:
        uploaded = Path(scratch) / "upload.safetensors"
        with open(uploaded, "wb") as out:
            out.write(head)
            while chunk := upload.read(1024 * 1024):
                out.write(chunk)
        try:
            tensors = load_file(str(uploaded))
        except (SafetensorError, OSError, ValueError) as error:
            raise _refuse("file", f"not a safetensors file: {error}") from None
        card = _card(card_json, uploaded)
        try:
            network, model_card = rebuild(tensors, card)
        except ValueError as error:
            raise _refuse("file", f"the weights do not fit the card: {error}") from None
    return _register(session, tenant_id, network, model_card, name, filename)


def import_hf_model(session: Session, tenant_id: str, hf_model: str, name: str | None) -> Model:
    """A Hugging Face model directory configured on the server: an encoder as a features model
    (the base of `finetune` and `adapt` jobs), a causal language model as a `causal_lm` model
    (the base of `sft`, and it generates)."""
    directory = model_dirs().get(hf_model)
    causal = directory is not None and is_causal_lm(directory)
    architecture = "hf_causal_lm" if causal else "hf_encoder"
    try:
        params = ARCHITECTURES[architecture].params(base=hf_model)
    except ValidationError as error:
        raise _refuse("hf_model", error.errors()[0]["msg"]) from None
    trunk = pretrained_trunk(architecture, params)
    network = Network(trunk.normalize, trunk.backbone, nn.Identity())
    card = ModelCard(**dict(trunk.card), task="causal_lm" if causal else "features")
    return _register(session, tenant_id, network, card, name, f"hf:{hf_model}")


def _register(
    session: Session,
    tenant_id: str,
    network: nn.Module,
    card: ModelCard,
    name: str | None,
    imported_from: str,
) -> Model:
    """Store the network as a model of the tenant's, within its storage quota."""
    full_card = card.model_copy(
        update={
            "model_id": new_id("model"),
            "name": name,
            "imported_from": imported_from,
            "created_at": time.time(),
        }
    )
    with tempfile.TemporaryDirectory(prefix="tunery-import-") as scratch:
        stored = Path(scratch) / "model"
        save_model(network, full_card, stored)
        tenants.check_storage_quota(session, tenant_id, stored.stat().st_size, "file")
        model = model_from_card(full_card, stored, tenant_id)
    session.add(model)
    session.flush()
    return model
