"""What a job spec may name, from the registries themselves: the architectures, the methods and
their params as JSON Schema, and the built-in datasets. The dashboard's form offers them; the
spec's own schema (in /openapi.json) leaves `model.params` and `method.params` open, because
which fields they take depends on the architecture or method named beside them."""

from functools import cache

from app.schemas import ArchitectureOut, MethodOut, SpecCatalog
from trainer.architectures import ARCHITECTURES
from trainer.data import BUILTIN_DATASETS
from trainer.methods import METHODS


@cache
def spec_catalog() -> SpecCatalog:
    """The same for every caller and for the life of the process: the registries are fixed."""
    return SpecCatalog(
        architectures=[
            ArchitectureOut(
                name=arch.name,
                modalities=sorted(arch.modalities),
                pretrained=arch.pretrained is not None,
                supports_lora=arch.supports_lora,
                params_schema=arch.params.model_json_schema(),
            )
            for arch in ARCHITECTURES.values()
        ],
        methods=[
            MethodOut(
                name=method.name,
                kind=method.kind,
                modalities=sorted(method.modalities),
                validation_metrics=list(method.validation_metrics),
                params_schema=method.params.model_json_schema(),
            )
            for method in METHODS.values()
        ],
        builtin_datasets=sorted(BUILTIN_DATASETS),
    )
