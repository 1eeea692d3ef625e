"""Supervised fine-tuning of a causal language model on chat or prompt/completion examples
(OpenAI's fine-tuning format): next-token prediction with the loss on the assistant's turns
and the completions only (`trainer.chat_format`), in full or with LoRA adapters (`hf_causal_lm`).

Reports, after every epoch, the validation loss per trained token, `token_accuracy` (the
share of those tokens the model ranks first) and `perplexity`; the test split's at the end.
An example longer than the model's `max_length` is refused, naming it, or cut to it
(`truncation`), and the events say how many were cut.
"""

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from trainer.architectures import Network, lora
from trainer.architectures.lora import LoraParams
from trainer.card import ModelCard
from trainer.chat_format import ChatTokenizer, Encoded
from trainer.data import Split, splits_for
from trainer.language_model import IGNORED, next_token_logits, output_layer, padded
from trainer.loop import Recipe, fit
from trainer.readers.chat import ChatExample, CompletionExample, Example
from trainer.run import RunContext, TrainResult
from trainer.training import TrainerError, batch_order, batches_per_epoch, seed_everything
from trainer.trunk import start_trunk


class Params(LoraParams):
    truncation: Literal["refuse", "truncate"] = Field(
        "refuse",
        description="An example over the model's `max_length` tokens: `refuse` refuses the job "
        "naming it (at submission, where the model's tokenizer is known before training: an "
        "`hf_causal_lm` base or a base model; else when the job starts), `truncate` keeps its "
        "first `max_length` tokens.",
    )


def describe(split: str, index: int, example: Example) -> str:
    """An example as an error names it: its split, position and first words."""
    if isinstance(example, CompletionExample):
        first = example.prompt
    else:
        first = (example.messages if isinstance(example, ChatExample) else example.input)[0].content
    return f"{split} example {index} ({first[:40]!r})"


def example_tokens(tokenizer: ChatTokenizer, example: Example) -> int:
    """The example's tokens, as training reads it."""
    return len(tokenizer.encode(example).ids)


def fit_length(
    tokens: Encoded, max_length: int, truncation: str, where: str
) -> tuple[Encoded, bool]:
    """The example within `max_length` tokens, cut if `truncation` allows (and whether it was),
    else a TrainerError naming it."""
    if len(tokens.ids) <= max_length:
        return tokens, False
    if truncation == "refuse":
        raise TrainerError(
            "invalid_data",
            f"{where} has {len(tokens.ids)} tokens, over the model's max_length "
            f"{max_length}; shorten it, raise max_length, or set method.params.truncation to "
            "truncate",
        )
    return Encoded(tokens.ids[:max_length], tokens.trained[:max_length]), True


def encode_split(
    tokenizer: ChatTokenizer, split: Split, name: str, max_length: int, truncation: str
) -> tuple[list[Encoded], int]:
    """The split's examples as token ids and trained-token masks, and how many were cut."""
    encoded, cut = [], 0
    for index, example in enumerate(split.examples):
        where = describe(name, index, example)
        tokens, was_cut = fit_length(tokenizer.encode(example), max_length, truncation, where)
        encoded.append(tokens)
        cut += was_cut
    return encoded, cut


def warn_of_cuts(ctx: RunContext, cuts: dict[str, int], max_length: int, what: str) -> None:
    """Says in the job's events how many of each split's `what` were cut, if any were."""
    if any(cuts.values()):
        counts = ", ".join(f"{n} {name}" for name, n in cuts.items() if n)
        ctx.events.log(f"warning: cut to max_length {max_length} tokens: {counts} {what}")


def validated_before_training(
    ctx: RunContext, validate: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """The starting model's validation figures, reported as epoch 0's."""
    before = validate()
    for name, value in before.items():
        ctx.events.metric(name, "validation", value, 0, 0)
    return before


def batch_of(rows: list[Encoded], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(ids, mask, targets): targets[i, t] is the token at t + 1 where it is trained."""
    targets = [
        [token if learns else IGNORED for token, learns in zip(row.ids, row.trained, strict=True)]
        for row in rows
    ]
    ids, mask, labels = padded([row.ids for row in rows], pad_id, targets)
    shifted = torch.full_like(labels, IGNORED)
    shifted[:, :-1] = labels[:, 1:]
    return ids, mask, shifted


def token_losses(model: Network, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Summed cross-entropy over the batch's trained tokens, their count, and how many the
    model ranks first."""
    ids, mask, targets = batch
    logits = next_token_logits(model, ids, mask).float()
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    trained = targets != IGNORED
    correct = ((logits.argmax(-1) == targets) & trained).sum()
    return loss, trained.sum(), correct


@torch.no_grad()
def evaluate(
    model: Network, rows: list[Encoded], pad_id: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    model.eval()
    loss = tokens = correct = 0.0
    for start in range(0, len(rows), batch_size):
        batch = tuple(t.to(device) for t in batch_of(rows[start : start + batch_size], pad_id))
        summed, count, right = token_losses(model, batch)
        loss, tokens, correct = loss + summed.item(), tokens + count.item(), correct + right.item()
    mean = loss / max(tokens, 1)
    return {"loss": mean, "token_accuracy": correct / max(tokens, 1), "perplexity": math.exp(mean)}


def run(ctx: RunContext, params: Params) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    data = spec.data
    dataset, train, validation, test = splits_for(data.train, data.validation, data.test, hp.seed)
    trunk = start_trunk(ctx, dataset, train)
    head = output_layer(trunk, ctx.base)
    tokenizer = ChatTokenizer(trunk.card)
    max_length = trunk.backbone.max_length
    rows, cuts = {}, {}
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        rows[name], cuts[name] = encode_split(tokenizer, split, name, max_length, params.truncation)
    warn_of_cuts(ctx, cuts, max_length, "examples")
    lora.attach(trunk.backbone, params)
    model = Network(trunk.normalize, trunk.backbone, head).to(device)
    train_rows, pad_id = rows["train"], tokenizer.pad_id
    trained_tokens = sum(sum(row.trained) for row in train_rows)
    ctx.events.log(
        f"sft: {len(train_rows)} train ({trained_tokens} trained tokens), "
        f"{len(rows['validation'])} validation, {len(rows['test'])} test examples; on {device}"
    )

    def epoch_batches(g: torch.Generator):
        for index in batch_order(len(train_rows), hp.batch_size, g):
            yield batch_of([train_rows[i] for i in index.tolist()], pad_id)

    def batch_loss(batch, _progress: float) -> torch.Tensor:
        loss, tokens, _correct = token_losses(model, tuple(t.to(device) for t in batch))
        return loss / tokens.clamp_min(1)

    def validate() -> dict[str, float]:
        return evaluate(model, rows["validation"], pad_id, hp.batch_size, device)

    before = validated_before_training(ctx, validate)
    recipe = Recipe(
        model=model,
        param_groups=[{"params": [p for p in model.parameters() if p.requires_grad]}],
        epoch_batches=epoch_batches,
        steps_per_epoch=batches_per_epoch(len(train_rows), hp.batch_size),
        batch_loss=batch_loss,
        validate=validate,
        monitor="loss",
        mode="min",
        generator=generator,
    )
    result = fit(ctx, recipe)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = lora.finish(trunk.backbone, params)
    tested = evaluate(model, rows["test"], pad_id, hp.batch_size, device)
    for name, value in tested.items():
        ctx.events.metric(name, "test", value, result.step, result.epochs_run)
    metrics = {
        "train_loss": result.train_loss,
        "initial_validation_loss": before["loss"],
        **{f"validation_{name}": value for name, value in result.validation.items()},
        **{f"test_{name}": value for name, value in tested.items()},
        "best_epoch": result.best_epoch,
        "steps": result.step,
        "train_examples": len(train_rows),
        "trained_tokens": trained_tokens,
        "trained_parameters": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    card = ModelCard(**dict(trunk.card), task="causal_lm", adapter=adapter, metrics=metrics)
    return TrainResult(model.cpu(), card)
