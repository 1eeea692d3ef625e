"""Causal language modelling: predict each next token of a text corpus (the corpus's own BPE
tokenizer is trained first and kept with the model). Reports validation perplexity, before
training too, as `initial_val_perplexity`."""

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from trainer.data import Split
from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.text import PAD_ID, encode_documents, token_stream
from trainer.trunk import Trunk


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def chunks(trunk: Trunk, split: Split) -> torch.Tensor:
    """The split's texts as one token stream cut into rows of input_shape + 1 tokens."""
    length = trunk.card.input_shape[0] + 1
    stream = token_stream(trunk.tokenizer, split.texts)
    rows = len(stream) // length
    return stream[: rows * length].view(rows, length)


def documents(trunk: Trunk, texts: list[str]) -> torch.Tensor:
    """Streamed texts (`trainer.streaming`), one row each: its tokens and [EOS], cut at
    input_shape + 1 tokens or padded (id 0, which the loss ignores). A stream's batch is not
    one token stream: each example stays one text, so that the examples a run sees are the
    texts stored, counted one by one."""
    return encode_documents(trunk.tokenizer, texts, trunk.card.input_shape[0] + 1)


def next_token_loss(trunk: Trunk, head: nn.Module, x: torch.Tensor, _random) -> torch.Tensor:
    logits = head(trunk.backbone.forward_sequence(x[:, :-1]))
    targets = x[:, 1:].flatten()
    return F.cross_entropy(logits.float().flatten(0, 1), targets, ignore_index=PAD_ID)


def run(ctx: RunContext, _params: Params) -> TrainResult:

    def lm_head(trunk: Trunk) -> nn.Module:
        return nn.Linear(trunk.backbone.feature_dim, trunk.card.vocab_size)

    result = pretrain(ctx, Pretext("causal_lm", lm_head, chunks, next_token_loss, documents))
    metrics = result.card.metrics
    metrics["val_perplexity"] = math.exp(metrics["validation_loss"])
    metrics["initial_val_perplexity"] = math.exp(metrics["initial_validation_loss"])
    return result
