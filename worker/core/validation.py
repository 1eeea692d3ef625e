"""Checks on a job spec that need the registries: run at submission, before anything is queued."""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.core.architectures import ARCHITECTURES, build_classifier
from worker.core.data import BUILTIN_DATASETS, is_known, load_dataset
from worker.core.methods import METHODS, methods_for
from worker.core.spec import AdaptSpec, FinetuneSpec, PretrainSpec


@dataclass(frozen=True)
class SpecIssue:
    field: str
    message: str


def _params_issues(params_model: type[BaseModel], params: dict, field: str) -> list[SpecIssue]:
    try:
        params_model.model_validate(params)
    except ValidationError as error:
        return [SpecIssue(".".join([field, *map(str, e["loc"])]), e["msg"]) for e in error.errors()]
    return []


def _model_issues(spec: PretrainSpec | FinetuneSpec | AdaptSpec) -> list[SpecIssue]:
    if spec.kind != "pretrain" and (spec.model is None) == (spec.base_model_id is None):
        field = "model" if spec.model is None else "base_model_id"
        return [SpecIssue(field, "give exactly one of `model` (from scratch) or `base_model_id`")]
    if spec.model is None:
        return []
    arch = ARCHITECTURES.get(spec.model.architecture)
    if arch is None:
        known = ", ".join(sorted(ARCHITECTURES))
        message = f"unknown architecture {spec.model.architecture!r}; known: {known}"
        return [SpecIssue("model.architecture", message)]
    return _params_issues(arch.params, spec.model.params, "model.params")


def _method_issues(spec: PretrainSpec | FinetuneSpec | AdaptSpec) -> list[SpecIssue]:
    method = METHODS.get(spec.method.name)
    if method is None or spec.kind not in method.kinds:
        available = ", ".join(methods_for(spec.kind)) or "none yet"
        what = "unknown method" if method is None else f"{spec.kind} jobs cannot use method"
        message = f"{what} {spec.method.name!r}; methods for {spec.kind}: {available}"
        return [SpecIssue("method.name", message)]
    return _params_issues(method.params, spec.method.params, "method.params")


def _data_issues(spec: PretrainSpec | FinetuneSpec | AdaptSpec) -> list[SpecIssue]:
    known = ", ".join(sorted(BUILTIN_DATASETS))
    return [
        SpecIssue(f"data.{name}", f"unknown dataset {ref!r}; built-in datasets: {known}")
        for name, ref in spec.data
        if ref is not None and not is_known(ref)
    ]


def _fit_issues(
    spec: PretrainSpec | FinetuneSpec | AdaptSpec, base_card: dict[str, Any] | None
) -> list[SpecIssue]:
    train_ref = spec.data.source if spec.kind == "adapt" else spec.data.train
    dataset = load_dataset(train_ref)
    if base_card is not None:
        if tuple(base_card["input_shape"]) != dataset.input_shape:
            message = (
                f"the base model takes inputs of shape {base_card['input_shape']}, "
                f"but {train_ref} has {list(dataset.input_shape)}"
            )
            return [SpecIssue("base_model_id", message)]
        return []
    try:
        channels = dataset.input_shape[0]
        build_classifier(
            spec.model.architecture,
            spec.model.params,
            dataset.input_shape,
            len(dataset.labels),
            [0.0] * channels,
            [1.0] * channels,
        )
    except (RuntimeError, ValueError) as error:
        message = f"cannot build for inputs of shape {list(dataset.input_shape)}: {error}"
        return [SpecIssue("model.params", message)]
    return []


def check_spec(
    spec: PretrainSpec | FinetuneSpec | AdaptSpec, base_card: dict[str, Any] | None = None
) -> list[SpecIssue]:
    """Every problem with the spec; an empty list means it can run."""
    issues = _model_issues(spec) + _method_issues(spec) + _data_issues(spec)
    if not issues:
        issues = _fit_issues(spec, base_card)
    return issues
