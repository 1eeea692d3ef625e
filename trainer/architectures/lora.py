"""LoRA adapters (Hu et al., 2021) on a backbone that wraps a Hugging Face model, through
`peft`. Such a backbone names the attribute that holds the model in `hf_attribute`."""

from torch import nn


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
