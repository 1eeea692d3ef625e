"""Model artifacts: one safetensors file whose header carries the JSON model card.

A single self-describing file: weights load with `safetensors` anywhere, and the card
(architecture, params, input shape, labels, normalisation, tokenizer, metrics) travels with
them. Weights are stored under `normalize.`, `backbone.` and `head.`.

A model whose card has an `adapter` (LoRA kept apart from its base) stores only the adapter's
backbone weights and the head: loading rebuilds the base from its configured directory and
merges the adapter in, so every reader sees a plain model.
"""

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from trainer.architectures import ARCHITECTURES, Network, lora
from trainer.card import ModelCard
from trainer.heads import HEADS
from trainer.run import LoadedModel
from trainer.trunk import pretrained_trunk, trunk_from_card

CARD_KEY = "tunery.model_card"


def _is_stored(name: str, card: ModelCard) -> bool:
    return card.adapter is None or not name.startswith("backbone.") or "lora_" in name


def save_model(model: nn.Module, card: ModelCard, path: Path) -> None:
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if _is_stored(name, card):
            # safetensors stores no tensor twice; a tied weight (a language model's output
            # layer, its input embedding) is written under both names and ties again on load.
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            tensor = t.detach().cpu().contiguous()
            tensors[name] = tensor if key not in seen else tensor.clone()
            seen.add(key)
    save_file(tensors, str(path), metadata={CARD_KEY: card.model_dump_json()})


def read_card(path: Path) -> ModelCard:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if CARD_KEY not in metadata:
        raise ValueError(f"{path.name} has no tunery model card in its safetensors header")
    return ModelCard.model_validate_json(metadata[CARD_KEY])


def adapted_backbone(card: ModelCard, stored: dict[str, torch.Tensor]) -> nn.Module:
    """The base encoder named in the card, from its directory, with the stored LoRA adapter
    attached (not merged)."""
    params = ARCHITECTURES[card.architecture].params.model_validate(card.params)
    backbone = pretrained_trunk(card.architecture, params).backbone
    lora.attach_lora(backbone, **card.adapter.model_dump())
    adapter = {k.removeprefix("backbone."): v for k, v in stored.items() if "lora_" in k}
    missing, unexpected = backbone.load_state_dict(adapter, strict=False)
    if unexpected or any("lora_" in name for name in missing):
        raise ValueError(f"the stored adapter does not fit its base {params.base!r}")
    return backbone


def load_weights(path: Path) -> LoadedModel:
    state, card = load_file(str(path)), read_card(path)
    if card.adapter is not None:
        backbone = adapted_backbone(card, state)
        lora.merge_lora(backbone)
        merged = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
        state = merged | {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return LoadedModel(state, card)


def load_predictor(path: Path) -> tuple[Network, ModelCard]:
    """A model of a task head (`trainer.heads`: a classifier, a regressor), ready for
    inference."""
    loaded = load_weights(path)
    card = loaded.card
    if card.task not in HEADS:
        raise ValueError(f"a {card.task} model predicts nothing; tasks that do: {', '.join(HEADS)}")
    trunk = trunk_from_card(card)
    task = HEADS[card.task]
    head = task.from_card(trunk.backbone.feature_dim, card)
    model = Network(trunk.normalize, trunk.backbone, head, task.per_token)
    model.load_state_dict(loaded.state, strict=True)
    return model.eval(), card
