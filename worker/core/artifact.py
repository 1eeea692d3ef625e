"""Model artifacts: one safetensors file whose header carries the JSON model card.

A single self-describing file: weights load with `safetensors` anywhere, and the card
(architecture, params, input shape, labels, normalisation, tokenizer, metrics) travels with
them. Weights are stored under `normalize.`, `backbone.` and `head.`.
"""

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from worker.core.architectures import Network
from worker.core.run import LoadedModel
from worker.core.trunk import trunk_from_card

CARD_KEY = "tunery.model_card"
CARD_FORMAT = "tunery.model/1"


def save_model(model: nn.Module, card: dict[str, Any], path: Path) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CARD_KEY: json.dumps(card)})


def read_card(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if CARD_KEY not in metadata:
        raise ValueError(f"{path.name} has no tunery model card in its safetensors header")
    return json.loads(metadata[CARD_KEY])


def load_weights(path: Path) -> LoadedModel:
    return LoadedModel(load_file(str(path)), read_card(path))


def load_classifier(path: Path) -> tuple[Network, dict[str, Any]]:
    """A classification model, ready for inference."""
    loaded = load_weights(path)
    card = loaded.card
    if card["task"] != "classification":
        raise ValueError(f"a {card['task']} model is not a classifier")
    trunk = trunk_from_card(card)
    head = nn.Linear(trunk.backbone.feature_dim, len(card["labels"]))
    model = Network(trunk.normalize, trunk.backbone, head)
    model.load_state_dict(loaded.state, strict=True)
    return model.eval(), card
