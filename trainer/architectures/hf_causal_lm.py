"""A pretrained Hugging Face causal language model (GPT-2, Llama and the like) as a backbone:
token ids in; `logits` gives every position's next-token logits, `forward_sequence` the last
hidden states, `forward` their mean over real tokens.

Bases come from local directories only, configured like the encoders' (`TUNERY_HF_MODEL_DIRS`,
name -> directory with `config.json`, `model.safetensors`, `tokenizer.json` and, for chat, a
`tokenizer_config.json` or `chat_template.jinja` with its chat template). The card keeps the
model's config, tokenizer, special tokens and chat template, so that a trained model rebuilds,
generates and exports without its base directory.

The language-model head is the Hugging Face model's own (`lm_head`, tied to the input
embeddings where the config says so): a model of this architecture has no tunery head.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file
from torch import nn

from trainer.architectures.hf_encoder import configured, model_dirs
from trainer.architectures.rnn import masked_mean


class HFCausalLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="A configured Hugging Face model directory's name.")
    max_length: int = Field(1024, ge=2, le=131_072, description="Tokens per example, at most.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more time."
    )
    # Filled from the base directory when a job starts; kept in the model's card.
    config: dict[str, Any] = Field(default_factory=dict)
    special_tokens: dict[str, str] = Field(
        default_factory=dict, description="Filled in: the base's bos/eos/pad tokens."
    )
    chat_template: str | None = Field(None, description="Filled in: the base's chat template.")

    @field_validator("base")
    @classmethod
    def _a_causal_lm(cls, base: str) -> str:
        names = _architectures(model_dirs()[configured(base)])
        if names and not _names_causal_lm(names):
            raise ValueError(
                f"{base!r} is not a causal language model (its config names {', '.join(names)}); "
                "encoders are `hf_encoder`'s"
            )
        return base


class HFCausalLM(nn.Module):
    hf_attribute = "lm"  # where the Hugging Face model is, for LoRA

    def __init__(self, config: dict[str, Any], max_length: int, checkpointing: bool) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        hf_config = AutoConfig.for_model(**config)
        self.lm = AutoModelForCausalLM.from_config(hf_config)
        if checkpointing:  # non-reentrant: the frozen embeddings under LoRA pass no gradient
            self.lm.gradient_checkpointing_enable({"use_reentrant": False})
        self.max_length = token_limit(config, max_length)
        self.feature_dim = hf_config.hidden_size

    def blocks(self) -> list[nn.Module]:
        body = self.lm.base_model
        layers = getattr(body, "layers", None) or getattr(body, "h", None)
        if layers is None:
            return [self.lm]
        return [self.lm.get_input_embeddings(), *layers]

    def logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position; `mask` is 1 on real tokens, 0 on padding."""
        return self.lm(input_ids=tokens, attention_mask=mask).logits

    def forward_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, : self.max_length]
        return self.lm.base_model(input_ids=tokens).last_hidden_state

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.forward_sequence(tokens), tokens[:, : self.max_length])


def token_limit(config: dict[str, Any], max_length: int) -> int:
    """Tokens a model of this config reads at most: `max_length`, within its positions."""
    from transformers import AutoConfig

    positions = getattr(AutoConfig.for_model(**config), "max_position_embeddings", None)
    return min(max_length, positions or max_length)


def _config(params: HFCausalLMParams) -> dict[str, Any]:
    if params.config:
        return params.config
    return json.loads((model_dirs()[params.base] / "config.json").read_text())


def build_backbone(
    params: HFCausalLMParams, _shape: Sequence[int], _vocab_size: int | None
) -> nn.Module:
    return HFCausalLM(_config(params), params.max_length, params.gradient_checkpointing)


def _architectures(directory: Path) -> list[str]:
    """The model classes a Hugging Face directory's config names (it may name none)."""
    return json.loads((directory / "config.json").read_text()).get("architectures") or []


def _names_causal_lm(names: list[str]) -> bool:
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names)


def is_causal_lm(directory: Path) -> bool:
    """Whether a Hugging Face model directory holds a causal language model (GPT-2's
    `GPT2LMHeadModel`, `LlamaForCausalLM`, ...), by the classes its config names."""
    return _names_causal_lm(_architectures(directory))


SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def tokenizer_settings(directory: Path) -> tuple[dict[str, str], str | None]:
    """The special tokens and chat template a Hugging Face tokenizer directory declares."""
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    tokens = {}
    for name in SPECIAL_TOKENS:
        token = config.get(name)
        if isinstance(token, dict):  # an AddedToken written out
            token = token.get("content")
        if isinstance(token, str):
            tokens[name] = token
    template = config.get("chat_template")
    template_file = directory / "chat_template.jinja"
    if template_file.exists():
        template = template_file.read_text()
    return tokens, template if isinstance(template, str) else None


def trunk_card(params: HFCausalLMParams) -> dict[str, Any]:
    """The trunk card (without `architecture`) of the base model: its config, tokenizer,
    special tokens and chat template, read without its weights."""
    directory = model_dirs()[params.base]
    config = _config(params)
    special_tokens, chat_template = tokenizer_settings(directory)
    filled = params.model_copy(
        update={"config": config, "special_tokens": special_tokens, "chat_template": chat_template}
    )
    return {
        "params": filled.model_dump(),
        "input_shape": [params.max_length],
        "normalization": None,
        "tokenizer": (directory / "tokenizer.json").read_text(),
        "vocab_size": config["vocab_size"],
    }


def pretrained(params: HFCausalLMParams) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The trunk card of the base model and its weights (backbone names)."""
    weights = load_file(str(model_dirs()[params.base] / "model.safetensors"))
    return trunk_card(params), {f"lm.{name}": tensor for name, tensor in weights.items()}
