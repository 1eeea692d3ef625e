"""What every causal language model in tunery shares, whichever made it: next-token logits,
its output layer, and batches of token ids padded for it.

A language model is a `Network` (normalize, backbone, head). A Hugging Face causal LM
(`hf_causal_lm`) brings its own output layer, so its head is empty and its backbone gives the
logits; tunery's own sequence backbones (`transformer`, `gru`, `lstm`) give hidden states that
a linear head reads, trained by `causal_lm` pretraining.
"""

from collections.abc import Sequence

import torch
from torch import nn

from trainer.architectures import Network, hf_causal_lm
from trainer.card import TrunkCard
from trainer.run import LoadedModel
from trainer.trunk import Trunk

IGNORED = -100  # the label of a token the loss leaves out (torch's cross-entropy default)


def token_limit(card: TrunkCard) -> int:
    """The tokens a language model of this trunk card reads at most, known without building
    it: its `max_length`, within a Hugging Face config's positions."""
    config = card.params.get("config")
    if config:
        return hf_causal_lm.token_limit(config, card.params["max_length"])
    return card.params["max_length"]


def output_layer(trunk: Trunk, base: LoadedModel | None = None) -> nn.Module:
    """The head that turns the backbone's hidden states into next-token logits: none for a
    backbone that gives logits itself; else a linear layer, a language-model base's own."""
    if hasattr(trunk.backbone, "logits"):
        return nn.Identity()
    head = nn.Linear(trunk.backbone.feature_dim, trunk.card.vocab_size)
    if base is not None and base.card.task == "causal_lm":
        head.load_state_dict({k.removeprefix("head."): v for k, v in base.state.items()
                              if k.startswith("head.")})  # fmt: skip
    return head


def next_token_logits(model: Network, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (batch, length, vocabulary) for the token after each position; `mask` is 1 on
    real tokens and 0 on padding, which only ever follows them."""
    backbone = model.backbone
    if hasattr(backbone, "logits"):
        return backbone.logits(ids, mask)
    return model.head(backbone.forward_sequence(ids))


def padded(
    rows: Sequence[Sequence[int]], pad_id: int, labels: Sequence[Sequence[int]] | None = None
) -> tuple[torch.Tensor, ...]:
    """Rows of token ids padded on the right to the longest: (ids, mask), and the labels padded
    with IGNORED when given."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    if labels is None:
        return ids, mask
    targets = torch.full((len(rows), length), IGNORED, dtype=torch.long)
    for i, row in enumerate(labels):
        targets[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, mask, targets
