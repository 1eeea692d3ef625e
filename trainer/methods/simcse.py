"""Unsupervised SimCSE (Gao et al., 2021) for text encoders: each text is encoded twice with
dropout as the only augmentation, and each encoding must pick out its twin among the batch's
other encodings (NT-Xent). It is for encoders not yet trained for sentence embeddings: on
all-MiniLM-L6-v2, trained contrastively already, the loss is near zero from the first step and
the only gradient left pushes apart texts on the same topic (docs/RESULTS.md §4: a linear
probe on BBC News fell from 86.5% to 66.6% after one epoch).

Validation runs without dropout: the loss then measures how well each text's embedding picks
itself out among the others (how spread out the domain's embeddings are)."""

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.methods.contrastive import nt_xent
from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.trunk import Trunk


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.05, gt=0, le=10)


def run(ctx: RunContext, params: Params) -> TrainResult:

    def loss(trunk: Trunk, _head: nn.Module, tokens: torch.Tensor, _randomness) -> torch.Tensor:
        first, second = trunk.backbone(tokens), trunk.backbone(tokens)
        return nt_xent(first.float(), second.float(), params.temperature)

    pretext = Pretext("simcse", lambda _trunk: nn.Identity(), Trunk.inputs, loss)
    return pretrain(ctx, pretext)
