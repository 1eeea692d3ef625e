"""A decoder-only transformer (GPT-style) over token ids (id 0 is padding) or over a numeric
series, a window of (time, channels).

Pre-norm blocks of causal self-attention and an MLP. `forward_sequence` gives one vector per
token (next-token prediction); `forward` pools them (`rnn.pool`: over real tokens, or a
series' last step).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.architectures.rnn import input_layer, pool


class TransformerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(4000, ge=16, le=1_000_000, description="BPE vocabulary to train.")
    d_model: int = Field(128, ge=8, le=8192)
    layers: int = Field(2, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    max_length: int = Field(
        128, ge=2, le=8192, description="Tokens per text, and the longest series context."
    )
    dropout: float = Field(0.1, ge=0, lt=1)


class CausalSelfAttention(nn.Module):
    def __init__(self, params: TransformerParams) -> None:
        super().__init__()
        if params.d_model % params.heads:
            raise ValueError(f"d_model {params.d_model} is not a multiple of heads {params.heads}")
        self.heads, self.dropout = params.heads, params.dropout
        self.qkv = nn.Linear(params.d_model, 3 * params.d_model)
        self.out = nn.Linear(params.d_model, params.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, params: TransformerParams) -> None:
        super().__init__()
        d = params.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attention = CausalSelfAttention(params)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(params.dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerBackbone(nn.Module):
    def __init__(
        self, params: TransformerParams, shape: Sequence[int], vocab_size: int | None
    ) -> None:
        super().__init__()
        # Token ids' embedding, or a series' projection: one name, that stored weights carry.
        self.tokens = input_layer(shape, vocab_size, params.d_model)
        self.positions = nn.Embedding(params.max_length, params.d_model)
        self.layers = nn.ModuleList(Block(params) for _ in range(params.layers))
        self.ln = nn.LayerNorm(params.d_model)
        self.drop = nn.Dropout(params.dropout)
        self.max_length = params.max_length
        self.feature_dim = params.d_model

    def blocks(self) -> list[nn.Module]:
        return [nn.ModuleList([self.tokens, self.positions]), *self.layers, self.ln]

    def forward_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, : self.max_length]
        position = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(position))
        for layer in self.layers:
            x = layer(x)
        return self.ln(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return pool(self.forward_sequence(tokens), tokens[:, : self.max_length])


def build_backbone(
    params: TransformerParams, shape: Sequence[int], vocab_size: int | None
) -> nn.Module:
    # A text is cut at max_length; a series' context is not, as its latest steps would go.
    if len(shape) == 2 and shape[0] > params.max_length:
        raise ValueError(f"a context of {shape[0]} steps is over max_length {params.max_length}")
    return TransformerBackbone(params, shape, vocab_size)
