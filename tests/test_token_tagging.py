"""Token tagging (`trainer.heads.token_classification`) in the training core: words split
into a tokenizer's pieces and their tags aligned to each word's first piece, seqeval's entity
F1, a tagger learnt from a small jsonl file, its reload and ONNX graph, and the checks."""

import json
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from tests.test_methods import run
from trainer.artifact import load_predictor, save_model
from trainer.data import register_file
from trainer.export import export_onnx
from trainer.heads.token_classification import as_entities
from trainer.readers import DatasetError, read_dataset
from trainer.run import LoadedModel
from trainer.text import encode_words, train_tokenizer

NAMES = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Evans", "Thomas", "Roberts"]
WORDS = ["the", "board", "said", "today", "that", "shares", "rose", "and", "fell", "after"]


def tagged_file(path, count: int = 400, seed: int = 0):
    """Sentences of common words in which `Mr` or `Dr` comes before a name (B-PER) and a
    number with `%` is a PERCENT: the name's tag depends on the word before it."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        tags = ["O"] * len(words)
        at = rng.randrange(len(words))
        words[at:at] = [rng.choice(["Mr", "Dr"]), rng.choice(NAMES)]
        tags[at:at] = ["O", "B-PER"]
        if rng.random() < 0.5:  # the same names untitled: not a person by the rule
            words.append(rng.choice(NAMES))
            tags.append("O")
        if rng.random() < 0.5:
            words.append(f"{rng.randint(1, 99)}%")
            tags.append("B-PERCENT")
        lines.append(json.dumps({"tokens": words, "tags": tags}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_tagged_jsonl_reads_words_and_a_tag_per_word(tmp_path):
    parsed = read_dataset(tagged_file(tmp_path / "t.jsonl", 20), "jsonl", True,
                          task="token_classification")  # fmt: skip
    assert parsed.task == "token_classification" and parsed.labels == ("O", "B-PER", "B-PERCENT")
    assert len(parsed.words) == 20 and parsed.y.shape == (20, max(map(len, parsed.words)))
    first = parsed.words[0]
    assert parsed.texts[0] == " ".join(first) and (parsed.y[0, len(first) :] == -100).all()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["Mr", "Smith"], "tags": ["O"]}) + "\n")
    with pytest.raises(DatasetError) as caught:
        read_dataset(bad, "jsonl", True, task="token_classification")
    assert caught.value.where == "line 1, field 'tags'" and "2 tags" in caught.value.message


def test_each_words_tag_goes_to_its_first_piece():
    tokenizer = train_tokenizer(["the shares rose"], vocab_size=40)
    ids, first = encode_words(tokenizer, [["the", "roses", "rose"]], 12)
    pieces = tokenizer.encode(["the", "roses", "rose"], is_pretokenized=True)
    assert len(pieces.ids) > 3  # "roses" is split
    expected = []
    for position, word in enumerate(pieces.word_ids):
        expected.append(word if position == 0 or pieces.word_ids[position - 1] != word else -1)
    assert first[0, : len(expected)].tolist() == expected
    assert (first[0, len(expected) :] == -1).all() and (ids[0, len(expected) :] == 0).all()
    # Past the length, a word has no position.
    _ids, short = encode_words(tokenizer, [["the", "roses", "rose"]], 2)
    assert 2 not in short[0].tolist()


def test_plain_tags_are_read_as_one_entity_per_run():
    assert as_entities(["PER", "PER", "O", "LOC"]) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert as_entities(["B-PER", "I-PER", "O"]) == ["B-PER", "I-PER", "O"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagging")
    register_file("ds_tagged", tagged_file(root / "t.jsonl"), "jsonl", True, "label",
                  "token_classification")  # fmt: skip
    spec = {
        "kind": "finetune",
        "model": {"architecture": "gru", "params": {"vocab_size": 200, "max_length": 24,
                                                    "embedding_dim": 32, "hidden": 32}},
        "data": {"train": "ds_tagged"},
        "hyperparameters": {"epochs": 12, "batch_size": 16, "learning_rate": 1e-2, "seed": 0},
    }  # fmt: skip
    result, events = run(spec)
    path = root / "model.safetensors"
    save_model(result.model, result.card, path)
    return result, events, path


def test_a_tagger_learns_a_tag_that_depends_on_the_word_before(tagger):
    result, _events, _path = tagger
    metrics = result.card.metrics
    assert result.card.task == "token_classification"
    assert result.card.labels == ["O", "B-PER", "B-PERCENT"]
    # Tagging every name as a person would give PER a precision near 2/3; all O, F1 0.
    assert metrics["test_entity_f1"] > 0.9 and metrics["test_token_accuracy"] > 0.95, metrics


def test_a_tagger_reloads_and_exports_a_tag_distribution_per_token(tagger, tmp_path):
    import onnxruntime

    result, _events, path = tagger
    network, card = load_predictor(path)
    tokenizer = Tokenizer.from_str(card.tokenizer)
    ids, first = encode_words(tokenizer, [["the", "board", "said", "Mr", "Smith", "rose"]], 24)
    with torch.no_grad():
        expected = torch.softmax(result.model.eval()(ids), -1)
        assert torch.allclose(torch.softmax(network(ids), -1), expected, atol=1e-5)
    tags = [card.labels[i] for i in expected[0].argmax(-1)[first[0] >= 0].tolist()]
    assert tags == ["O", "O", "O", "O", "B-PER", "O"]
    onnx_path = tmp_path / "model.onnx"
    export_onnx(path, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path))
    probabilities, _features = session.run(None, {"inputs": ids.numpy()})
    assert probabilities.shape == (1, 24, 3)
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("freeze", ["none", "partial"])
def test_a_causal_lm_pretrained_transformer_fine_tunes_into_a_tagger(tagger, freeze):
    """The trunk a `causal_lm` pretrain learns on the sentences (no tags) starts a tagger:
    its weights go on (the pretrain's vocabulary, its blocks), whole or its top block only."""
    transformer = {"architecture": "transformer", "params": {
        "vocab_size": 200, "max_length": 24, "d_model": 32, "layers": 2, "heads": 2}}  # fmt: skip
    pretrain = {"kind": "pretrain", "model": transformer, "method": {"name": "causal_lm"},
                "data": {"train": "ds_tagged"},
                "hyperparameters": {"epochs": 3, "batch_size": 16, "seed": 0}}  # fmt: skip
    pretrained, _ = run(pretrain)
    base = LoadedModel(pretrained.model.state_dict(), pretrained.card)
    hyperparameters = {"epochs": 6, "batch_size": 16, "learning_rate": 1e-2, "seed": 0}
    spec = {"kind": "finetune", "base_model_id": "model_base", "data": {"train": "ds_tagged"},
            "method": {"name": "supervised", "params": {"freeze": freeze}},
            "hyperparameters": hyperparameters}  # fmt: skip
    result, events = run(spec, base)
    card = result.card
    assert card.task == "token_classification" and card.tokenizer == pretrained.card.tokenizer
    said = next(e["message"] for e in events if e.get("message", "").startswith("supervised:"))
    assert ("; 0 frozen blocks" in said) == (freeze == "none"), said
    assert card.metrics["test_entity_f1"] > 0.5, card.metrics
