"""Contrastive pretraining of text encoders on unlabelled texts (NT-Xent): each text's two
views must pick each other out among the batch's other texts' views.

The views are, by default, two random spans of one text (`positives: spans`, as DeCLUTR,
Giorgi et al., 2021), each as long as the model reads (its `max_length`, less the tokenizer's
special tokens), encoded with dropout. Unsupervised SimCSE's views (Gao et al., 2021: the same
text twice, dropout the only difference; `positives: dropout`) teach nothing to an encoder
already trained for sentence embeddings: on all-MiniLM-L6-v2 the loss was about 1e-5 from the
first step, and the only gradient left pushed apart the batch's other texts, those on the same
topic included, so a linear probe for BBC News topics fell from 86.5% to 66.6% after one
epoch. Two spans of an article share its subject, not its words: pulling them together is a
task such an encoder has not solved yet, and it is about what a text is about (docs/RESULTS.md,
bench.hf_text, has the probe before and after).

Validation runs without dropout and with the same spans every epoch."""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer
from torch import nn

from trainer.architectures.rnn import PAD_ID
from trainer.data import Split
from trainer.methods.contrastive import nt_xent
from trainer.methods.pretraining import Pretext, pretrain
from trainer.run import RunContext, TrainResult
from trainer.trunk import Trunk

MAX_SPANS_PER_TEXT = 16  # a text's tokens kept for drawing spans: this many spans' worth


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.05, gt=0, le=10)
    positives: Literal["spans", "dropout"] = Field(
        "spans",
        description="`spans`: two random spans of one text; `dropout`: the same text twice "
        "(unsupervised SimCSE; for encoders not yet trained for sentence embeddings).",
    )
    span_tokens: int | None = Field(
        None, ge=2, le=8192, description="With `spans`: tokens per span; default: as many as "
        "the model reads, less the tokenizer's special tokens.",
    )  # fmt: skip


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer adds before and after a text's own (BERT: [CLS] and [SEP])."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    text = plain.encode("a", add_special_tokens=False).ids
    full = plain.encode("a").ids
    for start in range(len(full) - len(text) + 1):
        if full[start : start + len(text)] == text:
            return full[:start], full[start + len(text) :]
    return [], []


def text_tokens(tokenizer: Tokenizer, texts: list[str], width: int) -> torch.Tensor:
    """Each text's own token ids (no special tokens), the first `width`, padded with 0."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    out = torch.full((len(texts), width), PAD_ID, dtype=torch.long)
    for i, encoding in enumerate(plain.encode_batch(texts, add_special_tokens=False)):
        ids = encoding.ids[:width]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def draw_spans(
    tokens: torch.Tensor,
    span: int,
    specials: tuple[list[int], list[int]],
    length: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One random span of `span` tokens of each row (all of a shorter one), between the
    tokenizer's special tokens and padded to `length`: the model's input."""
    prefix, suffix = specials
    device, tokens = tokens.device, tokens.cpu()
    n = len(tokens)
    real = (tokens != PAD_ID).sum(1)
    start = (torch.rand(n, generator=generator) * ((real - span).clamp_min(0) + 1)).long()
    start = start.clamp_max(tokens.shape[1] - 1)
    positions = (start[:, None] + torch.arange(span)).clamp_max(tokens.shape[1] - 1)
    window = tokens.gather(1, positions)
    kept = torch.minimum(real - start, torch.tensor(span)).clamp_min(0)
    window[torch.arange(span) >= kept[:, None]] = PAD_ID
    out = torch.full((n, length), PAD_ID, dtype=torch.long)
    out[:, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    out[:, len(prefix) : len(prefix) + span] = window
    rows = torch.arange(n)
    for j, token in enumerate(suffix):
        out[rows, len(prefix) + kept + j] = token
    return out.to(device)


def run(ctx: RunContext, params: Params) -> TrainResult:
    specials: tuple[list[int], list[int]] = ([], [])
    span = 0

    def examples(trunk: Trunk, split: Split) -> torch.Tensor:
        nonlocal specials, span
        if params.positives == "dropout":
            return trunk.inputs(split)
        length = trunk.card.input_shape[0]
        specials = special_tokens(trunk.tokenizer)
        room = length - len(specials[0]) - len(specials[1])
        span = max(1, min(params.span_tokens or room, room))
        return text_tokens(trunk.tokenizer, list(split.texts), span * MAX_SPANS_PER_TEXT)

    def loss(trunk: Trunk, _head: nn.Module, tokens: torch.Tensor, randomness) -> torch.Tensor:
        if params.positives == "dropout":
            first, second = tokens, tokens
        else:
            length = trunk.card.input_shape[0]
            first, second = (draw_spans(tokens, span, specials, length, randomness) for _ in "12")
        return nt_xent(
            trunk.backbone(first).float(), trunk.backbone(second).float(), params.temperature
        )

    pretext = Pretext("simcse", lambda _trunk: nn.Identity(), examples, loss)
    return pretrain(ctx, pretext)
