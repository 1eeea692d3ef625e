"""Checks on a job spec that need the registries: run at submission, before anything is queued."""

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ValidationError

from trainer.architectures import ARCHITECTURES, Architecture, build_trunk
from trainer.architectures.log_mel import log_mel_for
from trainer.card import ModelCard, TrunkCard
from trainer.chat_format import ChatTokenizer
from trainer.data import BUILTIN_DATASETS, DatasetInfo, dataset_name, describe_builtin
from trainer.language_model import token_limit
from trainer.methods import METHODS, Method, methods_for
from trainer.readers.chat import Example
from trainer.series import PART_SHARES, longest_horizon
from trainer.spec import (
    AdaptSpec,
    DatasetSelection,
    FinetuneSpec,
    PretrainSpec,
    SpecIssue,
    TrainData,
)

Spec = PretrainSpec | FinetuneSpec | AdaptSpec
# Looks a dataset up by name: built-in or uploaded; None when there is no such dataset.
Describe = Callable[[str], DatasetInfo | None]


def _params_issues(params_model: type[BaseModel], params: dict, field: str) -> list[SpecIssue]:
    try:
        params_model.model_validate(params)
    except ValidationError as error:
        return [SpecIssue(".".join([field, *map(str, e["loc"])]), e["msg"]) for e in error.errors()]
    return []


def _model_issues(spec: Spec) -> list[SpecIssue]:
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


def _method_issues(spec: Spec) -> list[SpecIssue]:
    method = METHODS.get(spec.method.name)
    if method is None or method.kind != spec.kind:
        available = ", ".join(methods_for(spec.kind))
        what = "unknown method" if method is None else f"{spec.kind} jobs cannot use method"
        message = f"{what} {spec.method.name!r}; methods for {spec.kind}: {available}"
        return [SpecIssue("method.name", message)]
    return _params_issues(method.params, spec.method.params, "method.params")


def _labelled_fields(spec: Spec) -> set[str]:
    """The data fields whose datasets must carry labels: the method's, or, for a method that is
    not the job kind's, those that every method of the kind needs."""
    method = METHODS.get(spec.method.name)
    if method is not None and method.kind == spec.kind:
        return set(method.labelled)
    return set.intersection(*(set(METHODS[name].labelled) for name in methods_for(spec.kind)))


def _data_issues(spec: Spec, describe: Describe) -> list[SpecIssue]:
    known = ", ".join(sorted(BUILTIN_DATASETS))
    labelled = _labelled_fields(spec)
    issues = []
    for field, ref in spec.data.references():
        info = describe(dataset_name(ref))
        if info is None:
            message = (
                f"unknown dataset {dataset_name(ref)!r}; use the id of an uploaded dataset "
                f"or a built-in: {known}"
            )
            issues.append(SpecIssue(f"data.{field}", message))
        elif field in labelled and not info.labelled:
            message = f"{info.name} has no labels; {spec.kind} jobs need labels in `{field}`"
            issues.append(SpecIssue(f"data.{field}", message))
    return issues


def _stream_issues(spec: Spec, describe: Describe) -> list[SpecIssue]:
    """A streamed dataset (`trainer.streaming`) is read by a method that streams, as the whole
    training data: its own validation texts validate, and no subset is selected of it."""
    method = METHODS[spec.method.name]
    issues = []
    for field, ref in spec.data.references():
        info = describe(dataset_name(ref))
        if not info.streamed:
            continue
        streaming = [m.name for m in METHODS.values() if m.streams]
        if not method.streams:
            message = (
                f"{info.name} is streamed (too large to read whole); method {method.name!r} "
                f"reads its data whole: train on it with {' or '.join(streaming)}"
            )
        elif field != "train":
            message = (
                f"{info.name} is streamed: it trains, and validates on its own validation texts"
            )
        elif isinstance(ref, DatasetSelection) and (ref.fraction or ref.per_class or ref.whole):
            message = f"{info.name} is streamed: it is read whole, without a selection"
        else:
            continue
        issues.append(SpecIssue(f"data.{field}", message))
    return issues


def _fit_issues(spec: Spec, base_card: ModelCard | None, describe: Describe) -> list[SpecIssue]:
    """Whether the model, the method and the data go together."""
    field, ref = _main_data(spec)
    dataset = describe(dataset_name(ref))
    issues = []
    method = METHODS[spec.method.name]
    if dataset.modality not in method.modalities:
        message = f"method {method.name!r} does not read {dataset.modality} data ({dataset.name})"
        issues.append(SpecIssue(field, message))
    if method.tasks is not None and dataset.task not in method.tasks:
        tasks = " or ".join(sorted(method.tasks))
        message = (
            f"method {method.name!r} trains {tasks} models; {dataset.name} is {dataset.task} data"
        )
        issues.append(SpecIssue(field, message))
    issues += _per_class_issues(spec, describe)
    issues += _needs_issues(method, ARCHITECTURES[_architecture(spec, base_card)], spec)
    if spec.kind != "adapt":  # an adapt job's domains are checked below
        issues += _same_data_issues(spec, dataset, describe)
    if spec.kind == "adapt":
        # What the target's labels must be: the source's, or the adapted classifier's.
        labels = tuple(base_card.labels) if method.source_free and base_card else dataset.labels
        issues += _domain_issues(spec, dataset, labels, describe)
    if base_card is not None:
        if method.base_tasks is not None and base_card.task not in method.base_tasks:
            tasks = " or ".join(method.base_tasks)
            message = f"{method.name} starts from a {tasks} model, not a {base_card.task} model"
            issues.append(SpecIssue("base_model_id", message))
        if method.source_free and base_card.task != "classification":
            message = f"{method.name} adapts a classifier, not a {base_card.task} model"
            issues.append(SpecIssue("base_model_id", message))
        return issues + input_fit_issues(base_card, dataset, "base_model_id")
    arch = ARCHITECTURES[spec.model.architecture]
    if model_input(dataset.modality) not in arch.modalities:
        message = f"{arch.name} does not read {dataset.modality} data ({dataset.name})"
        return [*issues, SpecIssue("model.architecture", message)]
    if arch.pretrained is not None:  # a model trained elsewhere is known to build
        return issues
    try:
        params = arch.params.model_validate(spec.model.params)
        shape = dataset.input_shape or (getattr(params, "max_length", 1),)
        vocab_size = getattr(params, "vocab_size", None)
        log_mel = log_mel_for(dataset.modality)
        build_trunk(arch.name, spec.model.params, shape, None, vocab_size, log_mel)
    except (RuntimeError, ValueError) as error:
        message = f"cannot build for inputs of shape {list(dataset.input_shape)}: {error}"
        issues.append(SpecIssue("model.params", message))
    return issues


def _as_windowed(spec: Spec, describe: Describe) -> Describe:
    """Looks datasets up as the job reads them: a series cut into the job's windows, those of
    its training data's length unless the job sets it (as `trainer.data.splits_for` cuts them)."""
    data = spec.data
    train = describe(dataset_name(data.train)) if isinstance(data, TrainData) else None
    if train is None or train.task != "forecasting":
        return describe
    window = train.windowed(data.context_length, data.horizon)

    def described(name: str) -> DatasetInfo | None:
        info = describe(name)
        return info and info.windowed(window.input_shape[0], window.horizon)

    return described


def _window_issues(spec: Spec, describe: Describe) -> list[SpecIssue]:
    """A window asked of data that is no series, or longer than a series' parts hold."""
    data = spec.data
    asked = [name for name in ("context_length", "horizon") if getattr(data, name, None)]
    issues, seen = [], set()
    for field, ref in data.references():
        info = describe(dataset_name(ref))
        if info.task != "forecasting":
            if field == "train":
                issues += [
                    SpecIssue(f"data.{name}", f"{info.name} is {info.task} data, not a series")
                    for name in asked
                ]
            continue
        if info.name in seen:
            continue
        seen.add(info.name)
        sizes = dict(zip(PART_SHARES, info.part_sizes, strict=True))
        context_length, horizon = info.input_shape[0], info.horizon
        longest = longest_horizon(sizes, context_length)
        parts = ", ".join(f"{part} {rows}" for part, rows in sizes.items())
        if longest < 1:
            message = (
                f"context_length {context_length} leaves no training window: {info.name}'s "
                f"parts hold {parts} rows"
            )
            issues.append(SpecIssue("data.context_length", message))
        elif horizon > longest:
            message = (
                f"horizon {horizon} is longer than {info.name} allows with context_length "
                f"{context_length}: at most {longest} (its parts hold {parts} rows; each "
                "must hold a whole forecast)"
            )
            issues.append(SpecIssue("data.horizon", message))
    return issues


def _per_class_issues(spec: Spec, describe: Describe) -> list[SpecIssue]:
    """`per_class` counts examples of each class: numeric targets have none, and an example
    of multilabel data is of several."""
    kinds = {
        "regression": "numeric targets",
        "forecasting": "numeric targets",
        "multilabel": "label sets",
        "token_classification": "a tag per word",
    }
    issues = []
    for field, ref in spec.data.references():
        if isinstance(ref, DatasetSelection) and ref.per_class is not None:
            info = describe(ref.dataset)
            if info.task in kinds:
                message = (
                    f"{info.name} has {kinds[info.task]}, not one class per example: select "
                    "with `fraction`"
                )
                issues.append(SpecIssue(f"data.{field}.per_class", message))
    return issues


def _same_data_issues(spec: Spec, train: DatasetInfo, describe: Describe) -> list[SpecIssue]:
    """Validation and test data of the training data's kind (a preference file does not
    validate `sft`, nor a table an image model)."""
    issues = []
    for field in ("validation", "test"):
        ref = getattr(spec.data, field, None)
        if ref is None:
            continue
        other = describe(dataset_name(ref))
        if (other.modality, other.input_shape) != (train.modality, train.input_shape):
            message = (
                f"{other.name} holds {other.modality} data of shape {list(other.input_shape)}, "
                f"the training data {train.name} {train.modality} of {list(train.input_shape)}"
            )
            issues.append(SpecIssue(f"data.{field}", message))
        elif _label_space(other) != _label_space(train):
            message = (
                f"{other.name} is {_labels_of(other)}, the training data {train.name} "
                f"{_labels_of(train)}"
            )
            issues.append(SpecIssue(f"data.{field}", message))
    return issues


def _label_space(info: DatasetInfo) -> tuple:
    """What a model's outputs are for on this data: its task, its targets, and for multilabel
    or token tagging its labels (a label per output, in order). A classifier's validation
    data may lack a class."""
    ordered = info.task in ("multilabel", "token_classification")
    return info.task, info.targets, info.labels if ordered else ()


def _labels_of(info: DatasetInfo) -> str:
    """What a dataset's labels are, as an issue names them: its task, and its targets or
    multilabel labels."""
    named = info.targets or (_label_space(info)[2])
    return f"{info.task} data" + (f" of {list(named)}" if named else "")


def _main_data(spec: Spec) -> tuple[str, object]:
    """The data field that the model is built for and the others are checked against."""
    if spec.kind != "adapt":
        return "data.train", spec.data.train
    if spec.data.source is None:  # a source-free method: the target
        return "data.target", spec.data.target
    return "data.source", spec.data.source


def _whole_issues(spec: Spec) -> list[SpecIssue]:
    """Training on every example of a dataset leaves none of it to validate or test on."""
    train = getattr(spec.data, "train", None)
    if not (isinstance(train, DatasetSelection) and train.whole):
        return []
    issues = []
    for field in ("validation", "test"):
        ref = getattr(spec.data, field, None)
        if ref is None or dataset_name(ref) == train.dataset:
            message = (
                f"data.train reads every example of {train.dataset}: name {field} data of "
                "another dataset"
            )
            issues.append(SpecIssue(f"data.{field}", message))
    return issues


def _source_issues(spec: Spec) -> list[SpecIssue]:
    """An adapt method reads the labelled source unless it is source-free, and then it adapts a
    trained classifier instead."""
    method = METHODS.get(spec.method.name)
    if spec.kind != "adapt" or method is None or method.kind != "adapt":
        return []
    if not method.source_free:
        if spec.data.source is None:
            return [SpecIssue("data.source", f"{method.name} trains on a labelled source")]
        return []
    issues = []
    if spec.base_model_id is None:
        message = f"{method.name} adapts a trained classifier: give its id as base_model_id"
        issues.append(SpecIssue("base_model_id", message))
    if spec.data.source is not None:
        message = f"{method.name} is source-free: it reads no source data, leave it out"
        issues.append(SpecIssue("data.source", message))
    return issues


def _architecture(spec: Spec, base_card: ModelCard | None) -> str:
    return base_card.architecture if base_card else spec.model.architecture


def _needs_issues(method: Method, arch: Architecture, spec: Spec) -> list[SpecIssue]:
    """What the method needs of the architecture, and its params' own checks."""
    issues = []
    if method.check is not None:
        issues += [SpecIssue(f, m) for f, m in method.check(spec.method.params, arch)]
    if method.needs_left_to_right and not arch.reads_left_to_right:
        message = (
            f"{method.name} needs a model that reads left to right; {arch.name} reads both ways"
        )
        issues.append(SpecIssue("model.architecture", message))
    return issues


def model_input(modality: str) -> str:
    """What a model reads of a dataset of this modality: conversations are text to it."""
    return "text" if modality in ("chat", "preference") else modality


def input_fit_issues(card: TrunkCard, dataset: DatasetInfo, field: str) -> list[SpecIssue]:
    """Whether a stored model's trunk reads the dataset's inputs (a job's base model, or a
    model scored for transferability); the issue names `field`."""
    base_modality = card.modality
    if base_modality != model_input(dataset.modality):
        message = f"the base model reads {base_modality} data, {dataset.name} is {dataset.modality}"
        return [SpecIssue(field, message)]
    if base_modality != "text" and tuple(card.input_shape) != dataset.input_shape:
        message = (
            f"the base model takes inputs of shape {card.input_shape}, "
            f"but {dataset.name} has {list(dataset.input_shape)}"
        )
        return [SpecIssue(field, message)]
    return []


def _domain_issues(
    spec: AdaptSpec, source: DatasetInfo, labels: tuple[str, ...], describe: Describe
) -> list[SpecIssue]:
    issues = []
    for field in ("target", "target_test"):
        ref = getattr(spec.data, field)
        if ref is None:
            continue
        other = describe(dataset_name(ref))
        if (other.modality, other.input_shape) != (source.modality, source.input_shape):
            message = (
                f"{other.name} has {other.modality} inputs of shape {list(other.input_shape)}, "
                f"the source {source.name} {list(source.input_shape)}"
            )
            issues.append(SpecIssue(f"data.{field}", message))
        elif field == "target_test" and other.labels != labels:
            issues.append(SpecIssue("data.target_test", "its labels differ from the model's"))
    return issues


def _processes_issues(spec: Spec, base_card: ModelCard | None) -> list[SpecIssue]:
    """On several processes each rank computes the loss of its share of the batch, and the step
    is the single process's only when that loss is a mean over examples drawn without randomness
    from the data-order generator. Methods and architectures that would train differently say
    why in their `single_process`: they run on 1 process of 1 machine only."""
    if spec.resources.ranks == 1:
        return []
    method = METHODS[spec.method.name]
    arch = ARCHITECTURES[_architecture(spec, base_card)]
    params = (base_card.params if base_card else spec.model.params) or {}
    whys = []
    if method.single_process is not None:
        whys.append(f"method {method.name!r} runs on 1 process only: {method.single_process}")
    if arch.single_process is not None:
        whys.append(f"architecture {arch.name!r} runs on 1 process only: {arch.single_process}")
    else:
        whys += [
            f"{arch.name!r} with {name} runs on 1 process only: {why}"
            for name, why in arch.single_process_with.items()
            if params.get(name)
        ]
    field = "resources.processes" if spec.resources.processes > 1 else "resources.nodes"
    return [SpecIssue(field, why) for why in whys]


# Looks a dataset's chat or preference examples up by name, with their line numbers; None for
# a dataset of another kind.
NumberedExamples = Callable[[str], Sequence[tuple[int, Example]] | None]
SHOWN_LINES = 5  # of the examples over the limit, those an issue names


def _tokenizer_card(spec: Spec, base_card: ModelCard | None) -> TrunkCard | None:
    """The trunk card a job's model starts from, where its tokenizer is known before training:
    its base model's, or a pretrained architecture's; None for a tokenizer trained on the data."""
    if base_card is not None:
        return base_card.trunk() if base_card.tokenizer else None
    arch = ARCHITECTURES[spec.model.architecture]
    if arch.pretrained_card is None:
        return None
    params = arch.params.model_validate(spec.model.params)
    return TrunkCard(architecture=arch.name, **arch.pretrained_card(params))


def example_issues(
    spec: Spec, base_card: ModelCard | None, numbered_examples: NumberedExamples
) -> list[SpecIssue]:
    """Examples longer than the model reads, named by their lines, when the method refuses them
    (`truncation: refuse`) and the model's tokenizer is known before training. Run after
    `check_spec` found nothing: it tokenizes every example the job reads."""
    method = METHODS[spec.method.name]
    if method.example_tokens is None:
        return []
    if getattr(method.params.model_validate(spec.method.params), "truncation", None) != "refuse":
        return []
    card = _tokenizer_card(spec, base_card)
    if card is None:  # checked when the job starts, with the tokenizer it trains
        return []
    tokenizer, limit = ChatTokenizer(card), token_limit(card)
    fix = "shorten them, set method.params.truncation to truncate"
    if spec.model is not None:
        fix += ", or raise model.params.max_length"
    issues, over_of = [], {}  # over_of: a dataset's examples over the limit, by its name
    for field, ref in spec.data.references():
        name = dataset_name(ref)
        if name not in over_of:  # a dataset read by two fields is tokenized once
            examples = numbered_examples(name) or ()
            over_of[name] = [
                (line, tokens)
                for line, example in examples
                if (tokens := method.example_tokens(tokenizer, example)) > limit
            ]
        if over := over_of[name]:
            shown = ", ".join(
                f"line {line} ({tokens:,} tokens)" for line, tokens in over[:SHOWN_LINES]
            )
            more = f" and {len(over) - SHOWN_LINES} more" if len(over) > SHOWN_LINES else ""
            message = (
                f"{len(over)} example(s) over the model's max_length of {limit:,} tokens: "
                f"{shown}{more}; {fix}"
            )
            issues.append(SpecIssue(f"data.{field}", message))
    return issues


def check_spec(
    spec: Spec, base_card: ModelCard | None = None, describe: Describe = describe_builtin
) -> list[SpecIssue]:
    """Every problem with the spec; an empty list means it can run."""
    issues = _model_issues(spec) + _method_issues(spec) + _data_issues(spec, describe)
    issues += _source_issues(spec) + _whole_issues(spec)
    if not issues:
        describe = _as_windowed(spec, describe)
        issues = _window_issues(spec, describe)
    if not issues:
        issues = _stream_issues(spec, describe)
    if not issues:
        issues = _fit_issues(spec, base_card, describe) + _processes_issues(spec, base_card)
    return issues
