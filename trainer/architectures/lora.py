"""LoRA adapters (Hu et al., 2021) on a backbone that wraps a Hugging Face model, through
`peft`. Such a backbone names the attribute that holds the model in `hf_attribute`. A method
that offers them takes `LoraParams` among its params, `attach`es them before training and
`finish`es them after."""

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainer.card import Adapter


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_rank: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Train LoRA adapters of this rank instead of every weight (architectures "
        "that take them: `hf_encoder`, `hf_causal_lm`).",
    )
    lora_alpha: float = Field(16.0, gt=0, le=1024)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: str | list[str] = Field(
        "all-linear",
        description="The layers that get adapters, as peft names them: `all-linear` (every "
        "linear layer but the output one) or module names such as `[q_proj, v_proj]`.",
    )
    lora_merge: bool = Field(
        True,
        description="`false`: keep the adapter apart: the model stores only the adapter (and "
        "head), and is rebuilt on its base directory when loaded (the download carries the "
        "adapter in peft's format too).",
    )


def attach(backbone: nn.Module, params: LoraParams) -> None:
    """The adapters the params ask for, if any."""
    if params.lora_rank is not None:
        attach_lora(backbone, params.lora_rank, params.lora_alpha, params.lora_dropout,
                    params.lora_target_modules)  # fmt: skip


def finish(backbone: nn.Module, params: LoraParams) -> Adapter | None:
    """After training: the adapters merged into the weights, or the `Adapter` kept apart that
    the model's card names."""
    if params.lora_rank is None:
        return None
    if params.lora_merge:
        merge_lora(backbone)
        return None
    return Adapter(rank=params.lora_rank, alpha=params.lora_alpha, dropout=params.lora_dropout,
                   target_modules=params.lora_target_modules)  # fmt: skip


def attach_lora(
    backbone: nn.Module,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: str | list[str] = "all-linear",
) -> None:
    """Freeze the model and train low-rank adapters on its `target_modules` (every linear
    layer but the output one by default)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules
    )
    name = backbone.hf_attribute
    setattr(backbone, name, get_peft_model(getattr(backbone, name), config))


def merge_lora(backbone: nn.Module) -> None:
    """Fold the adapters into the weights: the result is a plain model again."""
    name = backbone.hf_attribute
    setattr(backbone, name, getattr(backbone, name).merge_and_unload())


def peft_model(backbone: nn.Module) -> nn.Module:
    """The adapted model as peft holds it (for `save_pretrained` of the adapter alone)."""
    return getattr(backbone, backbone.hf_attribute)
