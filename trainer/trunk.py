"""The part of a network that transfers between jobs: input normalisation plus backbone.

A job starts its trunk either fresh from `model` in its spec (normalisation computed on its
training split; for text, a tokenizer trained on its training texts) or from its base model.
"""

from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from trainer.architectures import (
    ARCHITECTURES,
    ChangesFromLastRow,
    build_trunk,
    normalization_of,
)
from trainer.architectures.log_mel import log_mel_for, log_mel_spectrograms, spectrogram_shape
from trainer.card import TrunkCard
from trainer.chat_format import corpus
from trainer.data import LabelledDataset, Split
from trainer.run import LoadedModel, RunContext
from trainer.spec import ModelSpec
from trainer.text import encode, encode_words, train_tokenizer


@dataclass
class Trunk:
    normalize: nn.Module
    backbone: nn.Module
    card: TrunkCard  # what rebuilds it
    tokenizer: Tokenizer | None = None

    @property
    def backbone_input_shape(self) -> tuple[int, ...]:
        """What the backbone reads of one example: the input, or an audio clip's log-mel
        spectrogram."""
        if self.card.log_mel is None:
            return tuple(self.card.input_shape)
        return spectrogram_shape(self.card.log_mel, self.card.input_shape)

    def inputs(self, split: Split) -> torch.Tensor:
        """The model's inputs for a split: raw values, or token ids for text."""
        if self.tokenizer is None:
            return split.x
        return encode(self.tokenizer, split.texts, self.card.input_shape[0])

    def word_inputs(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of a split's words, and where each word's first piece is
        (`trainer.text.encode_words`)."""
        if self.tokenizer is None or split.words is None:
            raise ValueError("token tagging reads words with a text model's tokenizer")
        return encode_words(self.tokenizer, split.words, self.card.input_shape[0])


def _load_weights(module: nn.Module, state: dict, prefix: str) -> None:
    own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    module.load_state_dict(own, strict=True)


def trunk_from_card(card: TrunkCard) -> Trunk:
    """The trunk a card describes (a model's card, or a trunk's own), with fresh weights."""
    normalization = card.normalization.model_dump() if card.normalization else None
    normalize, backbone = build_trunk(
        card.architecture,
        card.params,
        card.input_shape,
        normalization,
        card.vocab_size,
        card.log_mel,
        card.changes_from_last_row,
    )
    tokenizer = Tokenizer.from_str(card.tokenizer) if card.tokenizer else None
    return Trunk(normalize, backbone, card.trunk(), tokenizer)


def pretrained_trunk(architecture: str, params: Any) -> Trunk:
    """The trunk of an architecture that starts from weights trained elsewhere, with their own
    tokenizer."""
    card, weights = ARCHITECTURES[architecture].pretrained(params)
    trunk = trunk_from_card(TrunkCard(architecture=architecture, **card))
    expected = trunk.backbone.state_dict()  # files may carry buffers it rebuilds itself
    loaded = {k: v for k, v in weights.items() if k in expected}
    missing = trunk.backbone.load_state_dict(loaded, strict=False).missing_keys
    # A file stores a tied weight (e.g. a language model's output layer, which is its input
    # embedding) once: a missing name is fine if it shares its tensor with a loaded one.
    shared = {expected[name].data_ptr() for name in loaded}
    untied = [name for name in missing if expected[name].data_ptr() not in shared]
    if untied:
        raise ValueError(f"the {architecture} base has no weights for {', '.join(untied[:5])}")
    return trunk


def stored_trunk(model: LoadedModel) -> Trunk:
    """The trunk of a stored model, with its weights: what a job based on it starts from."""
    trunk = trunk_from_card(model.card)
    _load_weights(trunk.normalize, model.state, "normalize.")
    _load_weights(trunk.backbone, model.state, "backbone.")
    return trunk


def fresh_trunk(spec: ModelSpec, dataset: LabelledDataset, train: Split) -> Trunk:
    """The trunk a job with `model` = `spec` starts from: random weights (drawn from torch's
    global generator), normalisation statistics or a tokenizer from `train`; an architecture
    trained elsewhere starts from its pretrained weights."""
    arch = ARCHITECTURES[spec.architecture]
    # The card keeps every parameter, defaults included, so later defaults cannot change it.
    params = arch.params.model_validate(spec.params)
    if arch.pretrained is not None:
        return pretrained_trunk(arch.name, params)
    architecture = {"architecture": spec.architecture, "params": params.model_dump()}
    if dataset.modality in ("text", "chat"):
        texts = train.texts if train.texts is not None else corpus(train.examples)
        tokenizer = train_tokenizer(texts, params.vocab_size)
        card = TrunkCard(
            **architecture,
            input_shape=[params.max_length],
            tokenizer=tokenizer.to_str(),
            vocab_size=tokenizer.get_vocab_size(),
        )
    else:
        log_mel = log_mel_for(dataset.modality)
        inputs = train.x if log_mel is None else log_mel_spectrograms(train.x, log_mel)
        # Series: the forecast series' columns as their changes from the context's last row.
        changes = len(dataset.series.series) if dataset.series is not None else None
        if changes:
            inputs = ChangesFromLastRow(changes)(inputs)
        card = TrunkCard(
            **architecture,
            input_shape=list(dataset.input_shape),
            log_mel=log_mel,
            changes_from_last_row=changes,
            # Statistics of this job's training split only (audio: of its log-mel
            # spectrograms); the model applies them itself.
            normalization=normalization_of(inputs),
            # Tables: the order of the input features, categorical columns one-hot encoded.
            feature_names=list(dataset.feature_names) if dataset.feature_names else None,
            columns=list(dataset.columns) if dataset.columns else None,
        )
    return trunk_from_card(card)


def start_trunk(ctx: RunContext, dataset: LabelledDataset, train: Split) -> Trunk:
    if ctx.base is not None:
        return stored_trunk(ctx.base)
    return fresh_trunk(ctx.spec.model, dataset, train)
