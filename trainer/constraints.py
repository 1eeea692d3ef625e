"""Methods' extra checks on their params: the `check` hooks of the methods registry.

A hook takes the spec's raw method params and the model's architecture, and returns
`(field, message)` for each problem; `trainer.validation` turns them into spec issues.
"""

from collections.abc import Callable
from typing import Any

from trainer.architectures import ARCHITECTURES, Architecture

Check = Callable[[dict[str, Any], Architecture], list[tuple[str, str]]]


def lora_issues(params: dict[str, Any], architecture: Architecture) -> list[tuple[str, str]]:
    """LoRA adapters need an architecture that takes them, and their shape needs a rank."""
    issues = []
    lora_rank = params.get("lora_rank")
    if lora_rank is not None and not architecture.supports_lora:
        takers = ", ".join(name for name, arch in ARCHITECTURES.items() if arch.supports_lora)
        message = f"LoRA adapters are for {takers} models, not {architecture.name}"
        issues.append(("method.params.lora_rank", message))
    for name in ("lora_alpha", "lora_dropout", "lora_merge", "lora_target_modules"):
        if lora_rank is None and name in params:
            message = f"{name} shapes LoRA adapters, and none are trained without lora_rank"
            issues.append((f"method.params.{name}", message))
    return issues
