"""Models made elsewhere, checked before they can be the base of a job: a card naming a
registered architecture, and weights that fit it exactly."""

from typing import Any

import torch
from pydantic import ConfigDict, Field, ValidationError, model_validator
from tokenizers import Tokenizer
from torch import nn

from trainer.architectures import ARCHITECTURES, Network
from trainer.card import ModelCard, Normalization, TrunkCard
from trainer.heads import HEADS
from trainer.spec import Storable
from trainer.trunk import trunk_from_card

# What each task's card must give beside the trunk's fields (labels: at least two).
HEAD_FIELDS = {
    "classification": ("labels",),
    "multilabel": ("labels",),
    "token_classification": ("labels",),
    "regression": ("targets",),
    "forecasting": ("targets", "horizon"),
}


class ImportCard(Storable):
    """What an imported model must say about itself."""

    model_config = ConfigDict(extra="allow")

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    task: str = Field(
        description="`features`: a backbone only; a task head's name (`classification`, "
        "`regression`, `multilabel`, `token_classification`, `forecasting`): the weights "
        "include that head (`head.`), as tunery saves it."
    )
    input_shape: list[int] = Field(min_length=1, max_length=4)
    labels: list[str] | None = None
    normalization: Normalization | None = None
    tokenizer: str | None = Field(None, description="Text models: a `tokenizers` JSON.")
    feature_names: list[str] | None = None
    targets: list[str] | None = Field(None, description="Regression and forecasting.")
    target_scaling: Normalization | None = Field(
        None,
        description="Regression and forecasting: how the head's outputs are scaled back to the "
        "targets' units (default: not at all, mean 0 and std 1).",
    )
    thresholds: list[float] | None = Field(
        None, description="Multilabel: each label's probability threshold (default 0.5)."
    )
    horizon: int | None = Field(None, ge=1, description="Forecasting: the rows forecast.")
    season: int | None = Field(None, ge=1, description="Forecasting: rows per season.")
    mase_scale: list[float] | None = Field(
        None, description="Forecasting: each series' MASE denominator (default 1)."
    )
    changes_from_last_row: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> "ImportCard":
        arch = ARCHITECTURES.get(self.architecture)
        if arch is None:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        arch.params.model_validate(self.params)
        if self.task != "features" and self.task not in HEADS:
            raise ValueError(f"unknown task {self.task!r}; known: features, {', '.join(HEADS)}")
        for name in HEAD_FIELDS.get(self.task, ()):
            if getattr(self, name) is None:
                raise ValueError(f"a {self.task} model needs `{name}`")
        if "labels" in HEAD_FIELDS.get(self.task, ()) and len(self.labels) < 2:
            raise ValueError(f"a {self.task} model needs `labels`, at least two")
        if "text" in arch.modalities and self.tokenizer is None:
            raise ValueError(f"{self.architecture} reads text: the card needs its `tokenizer`")
        return self

    def head_fields(self) -> dict[str, Any]:
        """The model card's fields for its head, defaults filled in."""
        targets, labels = self.targets or [], self.labels or []
        fields: dict[str, Any] = {"labels": labels, "targets": targets}
        if self.task in ("regression", "forecasting"):
            ones = [1.0] * len(targets)
            unscaled = Normalization(mean=[0.0] * len(targets), std=ones)
            fields["target_scaling"] = self.target_scaling or unscaled
        if self.task == "multilabel":
            fields["thresholds"] = self.thresholds or [0.5] * len(labels)
        if self.task == "forecasting":
            fields |= {"horizon": self.horizon, "season": self.season or 1,
                       "mase_scale": self.mase_scale or [1.0] * len(targets)}  # fmt: skip
        return fields


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
    model_card = ModelCard(**dict(trunk_card), task=card.task, **card.head_fields())
    if card.task == "features":
        head, per_token = nn.Identity(), False
    else:
        task = HEADS[card.task]
        head, per_token = task.from_card(trunk.backbone.feature_dim, model_card), task.per_token
    network = Network(trunk.normalize, trunk.backbone, head, per_token)
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
    return network, model_card
