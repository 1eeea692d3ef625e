"""Tiny causal language models with random weights, saved as Hugging Face directories at test
time (nothing is downloaded): a Llama with a chat template of its own, and a GPT-2 without one,
each with a byte-level BPE tokenizer trained here."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from tests.stack import Stack

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "user assistant system: what is the answer? reverse this word, then say it again.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?-+=*/()'\"\n",
]
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _tokenizer(special: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def save_tiny_causal_lm(
    directory: Path, family: str = "llama", seed: int = 0, width: int = 64, layers: int = 2
) -> Path:
    """A random-weight `family` (llama or gpt2) model directory that `hf_causal_lm` loads:
    `layers` blocks of `width` features (4 attention heads)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    if family == "llama":
        tokenizer = _tokenizer(["<s>", "</s>"])
        hf_tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
            chat_template=LLAMA_TEMPLATE,
        )  # fmt: skip
        config = LlamaConfig(
            vocab_size=tokenizer.get_vocab_size(), hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, tie_word_embeddings=True,
            bos_token_id=tokenizer.token_to_id("<s>"), eos_token_id=tokenizer.token_to_id("</s>"),
        )  # fmt: skip
    else:
        tokenizer = _tokenizer(["<|endoftext|>"])
        hf_tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
        )
        eos = tokenizer.token_to_id("<|endoftext|>")
        config = GPT2Config(
            vocab_size=tokenizer.get_vocab_size(), n_embd=width, n_layer=layers, n_head=4,
            n_positions=512, bos_token_id=eos, eos_token_id=eos,
        )  # fmt: skip
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    hf_tokenizer.save_pretrained(directory)
    return directory


def configure(monkeypatch, models: dict[str, Path]) -> None:
    """Make the model directories loadable by name (TUNERY_HF_MODEL_DIRS)."""
    names = {name: str(path) for name, path in models.items()}
    monkeypatch.setenv("TUNERY_HF_MODEL_DIRS", json.dumps(names))


@contextmanager
def tiny_llama_stack(root: Path) -> Iterator["Stack"]:
    """A running server and worker (embedded SQLite) that know a tiny Llama as `tiny-llama`."""
    from tests.stack import start_stack

    models = {"tiny-llama": str(save_tiny_causal_lm(root / "tiny-llama", "llama"))}
    urls = (f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db")
    extra = {"TUNERY_HF_MODEL_DIRS": json.dumps(models)}
    stack = start_stack(root, *urls, queue=f"tunery-{uuid.uuid4().hex[:8]}", extra_env=extra)
    try:
        yield stack
    finally:
        stack.stop()
