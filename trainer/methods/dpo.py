"""Direct preference optimisation (Rafailov et al., 2023) of a causal language model on
preference pairs (OpenAI's format: a conversation, a preferred and a non-preferred answer).

The loss is -log sigmoid(beta * (the policy's log-likelihood gain over the reference on the
preferred answer - its gain on the other)); the reference is the model the job starts from (a
base model, or the architecture's pretrained weights), whose log-likelihoods are computed once
before training. Reports, after every epoch, the validation loss, `reward_accuracy` (the share
of pairs whose preferred answer gained more) and `margin` (the mean log-likelihood of the
preferred answer minus the other's: before training, epoch 0, the reference's).
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from trainer.architectures import Network, lora
from trainer.card import ModelCard
from trainer.chat_format import ChatTokenizer, Encoded
from trainer.data import Split, splits_for
from trainer.language_model import IGNORED, next_token_logits, output_layer
from trainer.loop import Recipe, fit
from trainer.methods import sft
from trainer.readers.chat import ChatExample, Message, PreferenceExample
from trainer.run import RunContext, TrainResult
from trainer.training import batch_order, batches_per_epoch, seed_everything
from trainer.trunk import start_trunk


class Params(sft.Params):
    beta: float = Field(
        0.1, gt=0, le=10, description="How far from the reference the model may move: higher "
        "keeps it closer."
    )  # fmt: skip


Pair = tuple[Encoded, Encoded]  # preferred, non-preferred; the loss on the answer alone


def encode_pair(tokenizer: ChatTokenizer, example: PreferenceExample) -> Pair:
    """Each answer after the conversation, rendered by the chat template; only its tokens
    count (earlier assistant turns are context)."""
    context = tuple(
        m.model_copy(update={"weight": 0}) if m.role == "assistant" else m for m in example.input
    )

    def answered(text: str) -> Encoded:
        reply = Message(role="assistant", content=text)
        return tokenizer.encode(ChatExample(messages=(*context, reply)))

    return answered(example.preferred), answered(example.non_preferred)


def example_tokens(tokenizer: ChatTokenizer, example: PreferenceExample) -> int:
    """The tokens of the pair's longer answer after its conversation, as training reads it."""
    return max(len(answer.ids) for answer in encode_pair(tokenizer, example))


def encode_pairs(
    tokenizer: ChatTokenizer, split: Split, name: str, max_length: int, truncation: str
) -> tuple[list[Pair], int]:
    pairs, cut = [], 0
    for index, example in enumerate(split.examples):
        where = sft.describe(name, index, example)
        (preferred, cut_one), (other, cut_other) = (
            sft.fit_length(answer, max_length, truncation, where)
            for answer in encode_pair(tokenizer, example)
        )
        pairs.append((preferred, other))
        cut += cut_one or cut_other
    return pairs, cut


def log_likelihoods(
    model: Network, pairs: list[Pair], pad_id: int, device: torch.device
) -> torch.Tensor:
    """(pairs, 2): each answer's summed log-likelihood under the model, preferred first."""
    rows = [pair[0] for pair in pairs] + [pair[1] for pair in pairs]
    ids, mask, targets = (t.to(device) for t in sft.batch_of(rows, pad_id))
    logits = next_token_logits(model, ids, mask).float()
    picked = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    summed = (picked * (targets != IGNORED)).sum(1)
    return torch.stack(summed.split(len(pairs)), dim=1)


@torch.no_grad()
def likelihoods_without_gradients(
    model: Network, pairs: list[Pair], pad_id: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """`log_likelihoods` of every pair, batch by batch, without gradients."""
    model.eval()
    parts = [
        log_likelihoods(model, pairs[i : i + batch_size], pad_id, device).cpu()
        for i in range(0, len(pairs), batch_size)
    ]
    return torch.cat(parts) if parts else torch.empty(0, 2)


def preference_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's loss per pair, from (pairs, 2) log-likelihoods."""
    gain = policy - reference
    return -F.logsigmoid(beta * (gain[:, 0] - gain[:, 1]))


@torch.no_grad()
def evaluate(
    model: Network, pairs: list[Pair], reference: torch.Tensor, beta: float, pad_id: int,
    batch_size: int, device: torch.device,
) -> dict[str, float]:  # fmt: skip
    policy = likelihoods_without_gradients(model, pairs, pad_id, batch_size, device)
    gain = policy - reference
    return {
        "loss": preference_loss(policy, reference, beta).mean().item(),
        "reward_accuracy": (gain[:, 0] > gain[:, 1]).float().mean().item(),
        "margin": (policy[:, 0] - policy[:, 1]).mean().item(),
    }


def run(ctx: RunContext, params: Params) -> TrainResult:
    spec, device, hp = ctx.spec, ctx.device, ctx.spec.hyperparameters
    generator = seed_everything(hp.seed)
    data = spec.data
    dataset, train, validation, test = splits_for(data.train, data.validation, data.test, hp.seed)
    trunk = start_trunk(ctx, dataset, train)
    model = Network(trunk.normalize, trunk.backbone, output_layer(trunk, ctx.base)).to(device)
    tokenizer = ChatTokenizer(trunk.card)
    pad_id, max_length = tokenizer.pad_id, trunk.backbone.max_length
    pairs, cuts, reference = {}, {}, {}
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        pairs[name], cuts[name] = encode_pairs(
            tokenizer, split, name, max_length, params.truncation
        )
        reference[name] = likelihoods_without_gradients(
            model, pairs[name], pad_id, hp.batch_size, device
        )
    sft.warn_of_cuts(ctx, cuts, max_length, "pairs")
    lora.attach(trunk.backbone, params)
    model.to(device)  # the adapters too
    train_pairs = pairs["train"]
    ctx.events.log(
        f"dpo: {len(train_pairs)} train, {len(pairs['validation'])} validation, "
        f"{len(pairs['test'])} test pairs; beta {params.beta}; on {device}"
    )

    def epoch_batches(g: torch.Generator):
        for index in batch_order(len(train_pairs), hp.batch_size, g):
            yield (index,)

    def batch_loss(batch, _progress: float) -> torch.Tensor:
        index = batch[0].tolist()
        policy = log_likelihoods(model, [train_pairs[i] for i in index], pad_id, device)
        return preference_loss(policy, reference["train"][index].to(device), params.beta).mean()

    def validate() -> dict[str, float]:
        return evaluate(model, pairs["validation"], reference["validation"], params.beta,
                        pad_id, hp.batch_size, device)  # fmt: skip

    before = sft.validated_before_training(ctx, validate)
    recipe = Recipe(
        model=model,
        param_groups=[{"params": [p for p in model.parameters() if p.requires_grad]}],
        epoch_batches=epoch_batches,
        steps_per_epoch=batches_per_epoch(len(train_pairs), hp.batch_size),
        batch_loss=batch_loss,
        validate=validate,
        monitor="loss",
        mode="min",
        generator=generator,
    )
    result = fit(ctx, recipe)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = lora.finish(trunk.backbone, params)
    tested = evaluate(
        model, pairs["test"], reference["test"], params.beta, pad_id, hp.batch_size, device
    )
    for name, value in tested.items():
        ctx.events.metric(name, "test", value, result.step, result.epochs_run)
    metrics = {
        "train_loss": result.train_loss,
        "initial_validation_margin": before["margin"],
        **{f"validation_{name}": value for name, value in result.validation.items()},
        **{f"test_{name}": value for name, value in tested.items()},
        "best_epoch": result.best_epoch,
        "steps": result.step,
        "train_pairs": len(train_pairs),
        "trained_parameters": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    card = ModelCard(**dict(trunk.card), task="causal_lm", adapter=adapter, metrics=metrics)
    return TrainResult(model.cpu(), card)
