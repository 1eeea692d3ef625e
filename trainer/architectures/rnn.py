"""Recurrent sequence models (GRU, LSTM) over token ids; id 0 is padding.

Features are the mean of the outputs over real tokens. The recurrence runs left to right, so
`forward_sequence` also serves next-token prediction.
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
    embedding_dim: int = Field(128, ge=1, le=4096)
    hidden: int = Field(128, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.1, ge=0, lt=1)


def masked_mean(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the positions that are not padding, (N, T, D) -> (N, D)."""
    mask = (tokens != PAD_ID).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


class RNNBackbone(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], params: RNNParams, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, params.embedding_dim, padding_idx=PAD_ID)
        dropout = params.dropout if params.layers > 1 else 0.0
        self.rnn = cell(
            params.embedding_dim, params.hidden, params.layers, batch_first=True, dropout=dropout
        )
        self.feature_dim = params.hidden

    def blocks(self) -> list[nn.Module]:
        return [self.embedding, self.rnn]

    def forward_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.embedding(tokens))[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.forward_sequence(tokens), tokens)


def require_vocab(vocab_size: int | None) -> int:
    if vocab_size is None:
        raise ValueError("sequence models read token ids: the data must be text")
    return vocab_size


def build_gru(params: RNNParams, _shape: Sequence[int], vocab_size: int | None) -> nn.Module:
    return RNNBackbone(nn.GRU, params, require_vocab(vocab_size))


def build_lstm(params: RNNParams, _shape: Sequence[int], vocab_size: int | None) -> nn.Module:
    return RNNBackbone(nn.LSTM, params, require_vocab(vocab_size))
