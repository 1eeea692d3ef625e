"""Models made elsewhere, checked before they can be the base of a job: a card naming a
registered architecture, and weights that fit it exactly."""

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, ValidationError, model_validator
from tokenizers import Tokenizer
from torch import nn

from trainer.architectures import ARCHITECTURES, Network
from trainer.card import ModelCard, Normalization, TrunkCard
from trainer.spec import Storable
from trainer.trunk import trunk_from_card


class ImportCard(Storable):
    """What an imported model must say about itself."""

    model_config = ConfigDict(extra="allow")

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    task: Literal["classification", "features"] = Field(
        description="`classification`: weights include the head; `features`: a backbone only."
    )
    input_shape: list[int] = Field(min_length=1, max_length=4)
    labels: list[str] | None = None
    normalization: Normalization | None = None
    tokenizer: str | None = Field(None, description="Text models: a `tokenizers` JSON.")
    feature_names: list[str] | None = None

    @model_validator(mode="after")
    def _fits(self) -> "ImportCard":
        arch = ARCHITECTURES.get(self.architecture)
        if arch is None:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        arch.params.model_validate(self.params)
        if self.task == "classification" and len(self.labels or []) < 2:
            raise ValueError("a classification model needs `labels`, at least two")
        if "text" in arch.modalities and self.tokenizer is None:
            raise ValueError(f"{self.architecture} reads text: the card needs its `tokenizer`")
        return self


def card_issues(error: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(["card", *map(str, e["loc"])]), e["msg"]) for e in error.errors()]


def rebuild(tensors: dict[str, torch.Tensor], card: ImportCard) -> tuple[nn.Module, ModelCard]:
    """The network the card describes with `tensors` loaded into it, and its model card (what
    the model is, not yet where it comes from); ValueError saying which weights are missing,
    unexpected or of the wrong shape."""
    vocab_size = Tokenizer.from_str(card.tokenizer).get_vocab_size() if card.tokenizer else None
    described = card.model_dump(include=set(TrunkCard.model_fields))  # what the card says of it
    trunk_card = TrunkCard(**described, vocab_size=vocab_size)
    trunk = trunk_from_card(trunk_card)
    head = (
        nn.Linear(trunk.backbone.feature_dim, len(card.labels))
        if card.task == "classification"
        else nn.Identity()
    )
    network = Network(trunk.normalize, trunk.backbone, head)
    try:
        result = network.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # shapes that differ from the architecture's
        lines = [line.strip() for line in str(error).splitlines()[1:4]]
        raise ValueError(f"weights of the wrong shape: {' '.join(lines)}") from None
    # The normalisation comes from the card when the file does not carry it.
    missing = [k for k in result.missing_keys if not k.startswith("normalize.")]
    wrong = []
    if missing:
        wrong.append(f"missing weights: {', '.join(missing[:10])}")
    if result.unexpected_keys:
        wrong.append(f"unexpected weights: {', '.join(result.unexpected_keys[:10])}")
    if wrong:
        raise ValueError("; ".join(wrong))
    return network, ModelCard(**dict(trunk_card), task=card.task, labels=card.labels or [])
