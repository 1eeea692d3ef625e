"""The registry of training methods. Adding one is a new module plus one line here."""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from trainer.methods import (
    autoencoder,
    causal_lm,
    contrastive,
    coral,
    dann,
    mmd,
    simcse,
    source_only,
    supervised,
)
from trainer.run import RunContext, TrainResult

ANY, IMAGES, IMAGES_TABLES, TEXT = (
    frozenset({"image", "tabular", "text"}),
    frozenset({"image"}),
    frozenset({"image", "tabular"}),
    frozenset({"text"}),
)


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # the job kind it serves
    params: type[BaseModel]
    run: Callable[[RunContext], TrainResult]
    modalities: frozenset[str]  # the data it reads


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("autoencoder", "pretrain", autoencoder.Params, autoencoder.run, IMAGES_TABLES),
        Method("contrastive", "pretrain", contrastive.Params, contrastive.run, IMAGES),
        Method("causal_lm", "pretrain", causal_lm.Params, causal_lm.run, TEXT),
        Method("simcse", "pretrain", simcse.Params, simcse.run, TEXT),
        Method("supervised", "finetune", supervised.Params, supervised.run, ANY),
        Method("source_only", "adapt", source_only.Params, source_only.run, ANY),
        Method("dann", "adapt", dann.Params, dann.run, ANY),
        Method("coral", "adapt", coral.Params, coral.run, ANY),
        Method("mmd", "adapt", mmd.Params, mmd.run, ANY),
    )
}


def methods_for(kind: str) -> list[str]:
    return sorted(name for name, method in METHODS.items() if method.kind == kind)
