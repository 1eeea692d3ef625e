"""Model artifacts: one safetensors file whose header carries the JSON model card.

A single self-describing file: weights load with `safetensors` anywhere, and the card
(architecture, params, input shape, labels, normalisation, metrics) travels with them.
"""

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from worker.core.architectures import Classifier, build_classifier

CARD_KEY = "tunery.model_card"
CARD_FORMAT = "tunery.model/1"


def save_model(model: Classifier, card: dict[str, Any], path: Path) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CARD_KEY: json.dumps(card)})


def read_card(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if CARD_KEY not in metadata:
        raise ValueError(f"{path.name} has no tunery model card in its safetensors header")
    return json.loads(metadata[CARD_KEY])


def load_model(path: Path) -> tuple[Classifier, dict[str, Any]]:
    card = read_card(path)
    norm = card["normalization"]
    model = build_classifier(
        card["architecture"],
        card["params"],
        card["input_shape"],
        len(card["labels"]),
        norm["mean"],
        norm["std"],
    )
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval(), card
