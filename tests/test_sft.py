"""Supervised fine-tuning of causal language models on chat data (`sft`), in process: tiny
random-weight Hugging Face models saved at test time, the loss on the assistant's tokens
only, LoRA, over-long examples, and generation from the stored model."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_methods import run, series
from tests.tiny_lm import configure, save_tiny_causal_lm
from trainer.architectures import ARCHITECTURES, Network
from trainer.artifact import read_card, save_model
from trainer.card import ModelCard
from trainer.chat_format import ChatTokenizer
from trainer.data import load_dataset, register_file, splits_for
from trainer.generation import LanguageModel, Sampling
from trainer.language_model import next_token_logits
from trainer.readers.chat import ChatExample, Message
from trainer.run import LoadedModel
from trainer.spec import DatasetSelection
from trainer.training import TrainerError
from trainer.trunk import pretrained_trunk

# A lookup the model can only learn from the data: each key's value, asked in a conversation.
LOOKUP = {f"key {i}": value for i, value in enumerate(
    ["red", "blue", "green", "gold", "pink", "grey", "teal", "navy"]
)}  # fmt: skip
SYSTEM = "Answer with the value of the key."


def lookup_lines(split: str | None = None) -> list[dict]:
    lines = []
    for key, value in LOOKUP.items():
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": key},
            {"role": "assistant", "content": value},
        ]
        lines.append({"messages": messages} | ({"split": split} if split else {}))
    return lines


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny_causal_lm(root / family, family) for family in ("llama", "gpt2")}


@pytest.fixture(autouse=True)
def configured(monkeypatch, models):
    configure(monkeypatch, models)


@pytest.fixture(scope="module")
def lookup(tmp_path_factory) -> str:
    """The lookup as an uploaded chat dataset: every example in train, validation and test,
    so that what is checked is whether the model learnt it."""
    path = tmp_path_factory.mktemp("data") / "lookup.jsonl"
    write_jsonl(path, [line for s in ("train", "validation", "test") for line in lookup_lines(s)])
    register_file("ds_lookup", path, "jsonl", False, "label")
    return "ds_lookup"


def sft_spec(dataset: str, family: str = "llama", epochs: int = 80, **params) -> dict:
    return {
        "kind": "finetune",
        "model": {"architecture": "hf_causal_lm", "params": {"base": family, "max_length": 64}},
        "method": {"name": "sft", "params": params},
        "data": {"train": dataset},
        "hyperparameters": {"epochs": epochs, "batch_size": 4, "learning_rate": 3e-3},
    }


def hf_params(family: str):
    return ARCHITECTURES["hf_causal_lm"].params.model_validate({"base": family})


def answers(model: LanguageModel) -> dict[str, str]:
    greedy = Sampling(temperature=0, max_tokens=8)
    asked = {}
    for key in LOOKUP:
        messages = [Message(role="system", content=SYSTEM), Message(role="user", content=key)]
        generation = model.generate(model.prompt_ids(messages=messages), greedy)
        asked[key] = "".join(generation.pieces())
    return asked


def exact_matches(model: LanguageModel) -> int:
    return sum(answer == LOOKUP[key] for key, answer in answers(model).items())


def stored(result, path: Path) -> LanguageModel:
    save_model(result.model, result.card, path)
    return LanguageModel(path)


def test_the_loss_is_on_the_assistants_turns_and_their_end_only(models):
    tokenizer = ChatTokenizer(pretrained_trunk("hf_causal_lm", hf_params("llama")).card)
    conversation = ChatExample(
        messages=(
            Message(role="system", content="be brief"),
            Message(role="user", content="one"),
            Message(role="assistant", content="first"),
            Message(role="user", content="two"),
            Message(role="assistant", content="second", weight=0),
            Message(role="user", content="three"),
            Message(role="assistant", content="third"),
        )
    )
    encoded = tokenizer.encode(conversation)
    trained = [token for token, learns in zip(encoded.ids, encoded.trained, strict=True) if learns]
    assert tokenizer.hf.decode(trained) == "first</s>\nthird</s>\n"
    # A prompt for generation tokenizes as the same conversation did in training.
    prompt = tokenizer.prompt(conversation.messages[:4])
    assert encoded.ids[: len(prompt)] == prompt


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sft_teaches_a_lookup_that_the_base_does_not_know(family, lookup, tmp_path):
    result, events = run(sft_spec(lookup, family))
    metrics = result.card.metrics
    assert result.card.task == "causal_lm"
    losses = series(events, "loss", "validation")
    assert losses[-1] < losses[0] / 4, losses  # epoch 0 is the base's
    assert metrics["validation_token_accuracy"] > 0.9
    assert metrics["validation_perplexity"] < 1.5
    assert metrics["trained_parameters"] == metrics["parameters"]
    trained = stored(result, tmp_path / "model.safetensors")
    assert exact_matches(trained) >= 6, answers(trained)  # of 8; the base: none


def test_the_base_does_not_know_the_lookup(models, tmp_path):
    trunk = pretrained_trunk("hf_causal_lm", hf_params("llama"))
    base = Network(trunk.normalize, trunk.backbone, nn.Identity())
    save_model(base, ModelCard(**dict(trunk.card), task="causal_lm"), tmp_path / "base.st")
    assert exact_matches(LanguageModel(tmp_path / "base.st")) == 0


def lora_spec(dataset: str, epochs: int = 120, **params) -> dict:
    spec = sft_spec(dataset, epochs=epochs, lora_rank=16, lora_alpha=16, lora_dropout=0.0, **params)
    return spec | {"hyperparameters": spec["hyperparameters"] | {"learning_rate": 5e-3}}


def test_lora_trains_adapters_alone_merged_at_the_end(lookup, tmp_path):
    result, events = run(lora_spec(lookup))
    metrics = result.card.metrics
    assert metrics["trained_parameters"] < metrics["parameters"] / 2  # rank 16 of width 64
    assert not any("lora" in name for name in result.model.state_dict())  # merged
    losses = series(events, "loss", "validation")
    assert losses[-1] < losses[0] - 1 and metrics["validation_token_accuracy"] > 0.8, losses
    # A random base's output layer, which LoRA leaves alone, keeps its logits flat: the
    # answers come out right less often than after full fine-tuning (7 of 8 here).
    assert exact_matches(stored(result, tmp_path / "merged.safetensors")) >= 5


def test_a_lora_adapter_kept_apart_is_stored_alone_and_rebuilds_on_its_base(lookup, tmp_path):
    kept, _events = run(lora_spec(lookup, epochs=2, lora_merge=False))
    path = tmp_path / "adapter.safetensors"
    save_model(kept.model, kept.card, path)
    assert read_card(path).adapter.rank == 16
    full = tmp_path / "full.safetensors"
    save_model(
        Network(*kept.model.children()), kept.card.model_copy(update={"adapter": None}), full
    )
    assert path.stat().st_size < 0.5 * full.stat().st_size
    rebuilt = LanguageModel(path).network  # the base from its directory, the adapter merged in
    assert not any("lora_" in name for name in rebuilt.state_dict())
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        expected = next_token_logits(kept.model.eval(), ids, torch.ones_like(ids))
        assert torch.allclose(next_token_logits(rebuilt, ids, torch.ones_like(ids)), expected,
                              atol=1e-4)  # fmt: skip


def test_an_over_long_example_is_refused_naming_it_or_cut_and_counted(lookup, tmp_path):
    long = lookup_lines()[:1]
    long[0]["messages"][1]["content"] = "key " * 200
    path = write_jsonl(tmp_path / "long.jsonl", lookup_lines() + long)
    register_file("ds_long", path, "jsonl", False, "label")
    with pytest.raises(TrainerError, match=r"example \d+ \('Answer with.*over the model's max_len"):
        run(sft_spec("ds_long", epochs=1))
    _result, events = run(sft_spec("ds_long", epochs=1, truncation="truncate"))
    warnings = [e["message"] for e in events if e["type"] == "log" and "cut to" in e["message"]]
    assert warnings and "max_length 64" in warnings[0], warnings


def test_generation_stops_where_asked_and_repeats_with_a_seed(lookup, tmp_path):
    result, _events = run(sft_spec(lookup, epochs=1))
    model = stored(result, tmp_path / "model.safetensors")
    prompt = model.prompt_ids(prompt="the quick brown")
    free = Sampling(temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    first, again = model.generate(prompt, free), model.generate(prompt, free)
    text = "".join(first.pieces())
    assert text == "".join(again.pieces()) == first.text
    assert first.prompt_tokens == len(prompt)
    if first.finish_reason == "length":
        assert first.completion_tokens == 12
    greedy = model.generate(prompt, Sampling(temperature=0, max_tokens=12))
    full = "".join(greedy.pieces())
    stop = full[3:5]
    if stop.strip():  # a stop text cuts the answer before it
        cut = model.generate(prompt, Sampling(temperature=0, max_tokens=12, stop=[stop]))
        assert "".join(cut.pieces()) == full[: full.find(stop)] and cut.finish_reason == "stop"


WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "quick",
    "bright",
    "seven",
    "table",
    "chair",
    "light",
    "sound",
    "water",
    "north",
    "dream",
    "paper",
    "glass",
    "music",
    "storm",
    "plant",
    "heart",
    "money",
    "round",
    "sweet",
    "field",
    "night",
]


def preference_lines() -> list[dict]:
    """A preference for answers in capitals: held-out words in validation and test."""
    lines = []
    for i, word in enumerate(WORDS):
        split = "train" if i < 16 else "validation" if i < 20 else "test"
        lines.append({
            "input": {"messages": [{"role": "user", "content": f"Say {word}"}]},
            "preferred_output": [{"role": "assistant", "content": word.upper()}],
            "non_preferred_output": [{"role": "assistant", "content": word}],
            "split": split,
        })  # fmt: skip
    return lines


def test_dpo_raises_the_preferred_answers_margin_on_held_out_pairs(models, tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", preference_lines())
    register_file("ds_prefs", path, "jsonl", False, "label")
    spec = sft_spec("ds_prefs", epochs=15) | {"method": {"name": "dpo", "params": {"beta": 0.1}}}
    result, events = run(spec)
    margins = series(events, "margin", "validation")
    accuracy = series(events, "reward_accuracy", "validation")
    assert margins[-1] > margins[0] + 1, margins  # epoch 0: the reference's
    assert accuracy[-1] == 1.0, accuracy
    assert result.card.metrics["test_reward_accuracy"] == 1.0  # on other held-out words
    assert result.card.task == "causal_lm"


def test_tunerys_own_transformer_pretrained_by_causal_lm_is_a_base_for_sft(lookup, tmp_path):
    corpus = [{"text": f"{SYSTEM} {key} is {value}."} for key, value in LOOKUP.items()] * 4
    register_file("ds_corpus", write_jsonl(tmp_path / "corpus.jsonl", corpus), "jsonl", False, "")
    architecture = {"architecture": "transformer", "params": {
        "d_model": 32, "layers": 1, "heads": 2, "max_length": 48, "vocab_size": 120}}  # fmt: skip
    pretrained, _events = run({
        "kind": "pretrain", "model": architecture, "method": {"name": "causal_lm"},
        "data": {"train": "ds_corpus"}, "hyperparameters": {"epochs": 2, "batch_size": 8},
    })  # fmt: skip
    base = LoadedModel(pretrained.model.state_dict(), pretrained.card)
    spec = sft_spec(lookup, epochs=3)
    del spec["model"]
    result, events = run(spec | {"base_model_id": "model_base"}, base)
    assert (result.card.architecture, result.card.task) == ("transformer", "causal_lm")
    assert result.card.tokenizer == pretrained.card.tokenizer
    losses = series(events, "loss", "validation")
    assert losses[-1] < losses[0], losses
    model = stored(result, tmp_path / "model.safetensors")  # generates under the default template
    generation = model.generate(model.prompt_ids(messages=[Message(role="user", content="key 1")]),
                                Sampling(temperature=0, max_tokens=4))  # fmt: skip
    assert "".join(generation.pieces()) == generation.text and generation.completion_tokens >= 1

    scratch, _events = run(sft_spec(lookup, epochs=1) | {"model": architecture})
    assert scratch.card.tokenizer != pretrained.card.tokenizer  # trained on the chat examples


def test_gradient_checkpointing_trains_the_same_lora_adapters(lookup):
    plain = lora_spec(lookup, epochs=2)
    checkpointed = json.loads(json.dumps(plain))
    checkpointed["model"]["params"]["gradient_checkpointing"] = True
    (_plain, plain_events), (second, second_events) = run(plain), run(checkpointed)
    assert second.model.backbone.lm.is_activation_checkpointing
    losses = series(plain_events, "loss", "validation")
    assert losses[-1] < losses[0]
    assert series(second_events, "loss", "validation") == pytest.approx(losses, rel=1e-5)


def test_a_dataset_read_whole_gives_every_split_of_it(lookup):
    whole = DatasetSelection(dataset=lookup, whole=True)
    _dataset, train, validation, test = splits_for(whole, lookup, lookup, seed=0)
    parts = load_dataset(lookup).splits
    assert len(train) == sum(len(part) for part in parts.values()) == 3 * len(LOOKUP)
    assert set(train.examples) == set(parts["train"].examples) | set(parts["test"].examples)
    assert (len(validation), len(test)) == (len(parts["validation"]), len(parts["test"]))
