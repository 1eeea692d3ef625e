"""Recurrent sequence models (GRU, LSTM) over token ids (id 0 is padding) or over a numeric
series, a window of (time, channels).

Features are, for text, the mean of the outputs over real tokens; for a series, the last
step's output (`pool`). The recurrence runs left to right, so `forward_sequence` also serves
next-token prediction.
"""

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

PAD_ID = 0


class RNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(4000, ge=16, le=1_000_000, description="BPE vocabulary to train.")
    max_length: int = Field(128, ge=2, le=8192, description="Tokens per text.")
    embedding_dim: int = Field(
        128, ge=1, le=4096, description="Width of a token's embedding, or of a series' step."
    )
    hidden: int = Field(128, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.1, ge=0, lt=1)


def masked_mean(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the positions that are not padding, (N, T, D) -> (N, D)."""
    mask = (tokens != PAD_ID).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


def pool(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """One feature vector per sequence, (N, T, D) -> (N, D). A series (numbers, never padded):
    the last step's output, the only one that has read the whole context, and where a forecast
    goes on from. Token ids: the mean over real tokens."""
    if inputs.is_floating_point():
        return outputs[:, -1]
    return masked_mean(outputs, inputs)


def require_vocab(vocab_size: int | None) -> int:
    if vocab_size is None:
        raise ValueError("sequence models read token ids or a series: the data must be either")
    return vocab_size


def input_layer(
    shape: Sequence[int], vocab_size: int | None, width: int, padding_idx: int | None = None
) -> nn.Module:
    """What a sequence model reads its inputs through: a series window (time, channels) by a
    linear projection of each step's channels to `width`; token ids by an embedding."""
    if len(shape) == 2:
        return nn.Linear(shape[1], width)
    return nn.Embedding(require_vocab(vocab_size), width, padding_idx=padding_idx)


class RNNBackbone(nn.Module):
    def __init__(
        self,
        cell: type[nn.RNNBase],
        params: RNNParams,
        shape: Sequence[int],
        vocab_size: int | None,
    ) -> None:
        super().__init__()
        self.embedding = input_layer(shape, vocab_size, params.embedding_dim, PAD_ID)
        dropout = params.dropout if params.layers > 1 else 0.0
        self.rnn = cell(
            params.embedding_dim, params.hidden, params.layers, batch_first=True, dropout=dropout
        )
        self.feature_dim = params.hidden

    def blocks(self) -> list[nn.Module]:
        return [self.embedding, self.rnn]

    def forward_sequence(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.embedding(inputs))[0]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return pool(self.forward_sequence(inputs), inputs)


def build_gru(params: RNNParams, shape: Sequence[int], vocab_size: int | None) -> nn.Module:
    return RNNBackbone(nn.GRU, params, shape, vocab_size)


def build_lstm(params: RNNParams, shape: Sequence[int], vocab_size: int | None) -> nn.Module:
    return RNNBackbone(nn.LSTM, params, shape, vocab_size)
