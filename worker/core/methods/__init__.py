"""The registry of training methods. Adding one is a new module plus one line here."""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from worker.core.methods import supervised
from worker.core.run import RunContext, TrainResult


@dataclass(frozen=True)
class Method:
    name: str
    kinds: frozenset[str]
    params: type[BaseModel]
    run: Callable[[RunContext], TrainResult]


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("supervised", frozenset({"finetune"}), supervised.Params, supervised.run),
    )
}


def methods_for(kind: str) -> list[str]:
    return sorted(name for name, method in METHODS.items() if kind in method.kinds)
