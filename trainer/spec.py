"""Job specs: the pydantic models that the API accepts and the trainer runs.

A spec is a discriminated union on `kind`. Rules that need a registry (known architectures,
methods and datasets) live in `trainer.validation`, so that this module stays import-light.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

JOB_KINDS = ("pretrain", "finetune", "adapt")
MAX_RUNTIME_SECONDS = 7 * 24 * 3600
MAX_PROCESSES = 64  # ranks of one job, on one machine
MAX_NODES = 64  # machines of one job
# A transferability score (`trainer.transferability`) reads at most this many examples: a larger
# selection is subsampled, stratified, so that one request's forward pass stays bounded.
# Measured on 2 busy CPU cores: the seed CNN reads about 500 digits a second, MiniLM (128
# tokens) about 10 texts a second, so 2,000 texts take about 3 minutes; LogME's ranking is
# steady long before that many examples.
MAX_SCORED_EXAMPLES = 2000

DatasetName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="A dataset, e.g. `builtin:digits`.",
        examples=["builtin:digits"],
    ),
]


NUL_REFUSED = "must not contain the NUL character (U+0000)"


def refuse_nul(value: Any) -> Any:
    """`value` unchanged, or a ValueError saying where in it (a string, or JSON of strings) the
    NUL character is: PostgreSQL stores no U+0000 in text or JSON, so a field holding one would
    fail only as it is saved."""
    where = _nul_path(value, "")
    if where is not None:
        raise ValueError(f"{NUL_REFUSED}{where and ' at ' + where}")
    return value


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else None
    if isinstance(value, list | tuple):
        items = enumerate(value)
    for key, item in items or ():
        inner = f"{path}[{key!r}]"
        if isinstance(key, str) and "\x00" in key:
            return f"the key {inner}"
        if (found := _nul_path(item, inner)) is not None:
            return found
    return None


# Text that can be stored: any string but one holding U+0000.
Text = Annotated[str, AfterValidator(refuse_nul)]

# A registered model's name or an alias: never a `@` or `/`, which a model reference
# (`name@alias`, `name/versions/N`) keeps for itself.
SLUG = r"[a-z0-9][a-z0-9_-]{0,99}"
Slug = Annotated[
    str,
    Field(
        pattern=f"^{SLUG}$",
        description="Lowercase letters, digits, `-` and `_`, starting with a letter or digit; "
        "at most 100 characters.",
    ),
]
# A model as a job or request names it: its id, or a registered model's version by alias or
# number (`app.services.registry`).
BASE_MODEL_DESCRIPTION = (
    "The model to start from: its id, or a registered model's version as `name@alias` or "
    "`name/versions/N` (resolved at submission: the job records the model's id)."
)


@dataclass(frozen=True)
class SpecIssue:
    """One problem with a request: the field at fault (dotted) and what is wrong with it."""

    field: str
    message: str


class Storable(BaseModel):
    """A model whose every field, nested params included, is stored: no NUL character in it."""

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return refuse_nul(value)


class _Strict(Storable):
    model_config = ConfigDict(extra="forbid")


class DatasetSelection(_Strict):
    """A dataset and, for the split it is named for (train, validation or test), a stratified
    subset chosen by the job's seed."""

    dataset: DatasetName
    whole: bool = Field(
        False,
        description="Read every example of the dataset, whatever its split (e.g. a file made "
        "to validate on alone), not only the split the field names.",
    )
    fraction: float | None = Field(None, gt=0, le=1, description="Keep this share of each class.")
    per_class: int | None = Field(None, ge=1, le=1_000_000, description="Keep N of each class.")

    @model_validator(mode="after")
    def _one_rule(self) -> "DatasetSelection":
        if self.fraction is not None and self.per_class is not None:
            raise ValueError("give `fraction` or `per_class`, not both")
        return self


DatasetRef = DatasetName | DatasetSelection


class ModelSpec(_Strict):
    """An architecture from the registry and its parameters, for a model trained from scratch."""

    architecture: str = Field(min_length=1, max_length=100, examples=["cnn"])
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    name: str = Field(min_length=1, max_length=100, examples=["supervised"])
    params: dict[str, Any] = Field(default_factory=dict)


class Hyperparameters(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0, le=10)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="`cosine` decays to zero over the run, after the warm-up."
    )
    warmup_steps: int = Field(0, ge=0, le=10_000_000, description="Linear LR warm-up.")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the gradient norm.")
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Stop after this many epochs without a better validation metric, and "
        "restore the weights of the best epoch.",
    )
    mixed_precision: Literal["auto", "bf16", "no"] = Field(
        "auto", description="`auto` trains in bf16 autocast on CUDA, in fp32 on the CPU."
    )
    channels_last: bool = Field(
        False,
        description="Keep images (N, C, H, W) and convolution weights in channels-last memory "
        "order: faster convolutions on GPUs' tensor cores and in oneDNN on CPUs. No effect on "
        "models without 4-d tensors.",
    )
    compile: bool = Field(
        False,
        description="Compile the model with `torch.compile` (TorchInductor) before training: "
        "faster steps over a long run, after first steps slowed by compilation (seconds to "
        "minutes). CPU workers need a C++ compiler for it.",
    )
    log_every_steps: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Also report the training loss and learning rate of every N-th step "
        "(metrics `step_loss` and `learning_rate`, split `train`); by default only per-epoch "
        "figures.",
    )


class ElasticNodes(_Strict):
    min_nodes: int = Field(1, ge=1, le=MAX_NODES, description="The fewest machines to go on with.")
    max_restarts: int = Field(
        3, ge=0, le=100, description="How many times the group may be re-formed in one attempt."
    )


class Resources(_Strict):
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="`cuda` jobs go to the GPU workers' queue, when there is one: with queues by "
        "size, that of the smallest workers with a GPU for each process (docs/WORKER.md).",
    )
    max_runtime_seconds: int = Field(24 * 3600, ge=1, le=MAX_RUNTIME_SECONDS)
    processes: int = Field(
        1,
        ge=1,
        le=MAX_PROCESSES,
        description="Data-parallel ranks under torchrun on each machine: each takes its share "
        "of every batch (`batch_size` stays the global batch) and, on CUDA, a GPU of its own. "
        "Not every method and architecture can: see docs/WORKER.md.",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description="Machines (workers of the job's queue) that train it together, each running "
        "`processes` ranks: the worker that claims the job gathers `nodes - 1` more for each "
        "attempt, all or none (docs/WORKER.md).",
    )
    elastic: ElasticNodes | None = Field(
        None,
        description="Keep an attempt alive when a machine is lost: torchrun re-forms the group "
        "from the last checkpoint with the machines left, down to `min_nodes`.",
    )

    @model_validator(mode="after")
    def _elastic_within_nodes(self) -> "Resources":
        if self.elastic is not None and self.elastic.min_nodes > self.nodes:
            raise ValueError(
                f"elastic.min_nodes ({self.elastic.min_nodes}) exceeds nodes ({self.nodes})"
            )
        return self

    @property
    def ranks(self) -> int:
        return self.nodes * self.processes


MAX_WINDOW_ROWS = 100_000


class _Data(_Strict):
    def references(self) -> list[tuple[str, DatasetRef]]:
        """The fields that name a dataset, with the dataset they name: those given."""
        return [(field, ref) for field, ref in self if isinstance(ref, str | DatasetSelection)]


class TrainData(_Data):
    """`validation` and `test` default to those splits of the `train` dataset."""

    train: DatasetRef
    validation: DatasetRef | None = None
    test: DatasetRef | None = None
    # A forecaster's window is the job's, not each dataset reference's: the model's input
    # (context_length rows) and output (horizon rows) are fixed by it, so train, validation and
    # test must be cut alike; a series dataset (built-in or uploaded) gives the defaults.
    context_length: int | None = Field(
        None,
        ge=1,
        le=MAX_WINDOW_ROWS,
        description="Forecasting: the rows a forecast reads, of every column (default: the "
        "dataset's).",
    )
    horizon: int | None = Field(
        None,
        ge=1,
        le=MAX_WINDOW_ROWS,
        description="Forecasting: the rows forecast after the context, of every series "
        "(default: the dataset's); every part of the series (train, validation, test) must "
        "hold one.",
    )


class AdaptData(_Data):
    """Labelled `source`, unlabelled `target`; `target_test` defaults to the target's test split.
    A source-free method (`shot`) reads no `source`: it adapts the job's base model."""

    source: DatasetRef | None = None
    target: DatasetRef
    target_test: DatasetRef | None = None


MAX_INTEGRATIONS = 5


class MlflowIntegration(_Strict):
    """Log the job to an MLflow tracking server: its spec as params, its metrics as they
    arrive, tags naming it, and its model as an artifact (docs/INTEGRATIONS.md)."""

    type: Literal["mlflow"]
    tracking_uri: Text = Field(
        max_length=2000,
        description="The tracking server's `http(s)://` URL; the workers send no credentials.",
        examples=["http://mlflow.internal:5000"],
    )
    experiment: Text = Field(
        "Default",
        min_length=1,
        max_length=500,
        description="The experiment the job's run goes in; made if it does not exist.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _http_server(cls, uri: str) -> str:
        # A worker logs to a server over HTTP: a `file:` or database URI would have it write
        # on its own disks, a `databricks` one use its own credentials. A spec is stored and
        # shown: a password has no place in it.
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as error:
            raise ValueError(f"not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL of a tracking server")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: the spec is stored and shown")
        return uri


# One type for now; more integrations join the union, told apart by `type`.
Integration = Annotated[MlflowIntegration, Field(discriminator="type")]


class CheckpointRetention(_Strict):
    """Which of a job's checkpoints are kept, while it runs and once it is over: the last
    `keep_last` (resume needs the last one, so at least that) and the best `keep_best` by a
    validation metric. A checkpoint is taken every `checkpoint_every_steps` steps (the
    server's setting) and at the end of each epoch, with that epoch's validation figures."""

    keep_last: int = Field(
        1, ge=1, le=1000, description="The latest checkpoints kept; resume needs the last one."
    )
    keep_best: int = Field(
        0, ge=0, le=1000, description="The best epoch-end checkpoints kept, by `metric`."
    )
    metric: str | None = Field(
        None,
        max_length=100,
        description="The validation metric `keep_best` ranks by; by default the one the job "
        "monitors for early stopping. Lower is better for losses and errors.",
    )


class _JobSpecBase(_Strict):
    name: str | None = Field(None, max_length=200)
    register_as: Slug | None = Field(
        None,
        description="A registered model's name: when the job succeeds, its model becomes the "
        "name's next version (the name is made with its first version).",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)
    checkpoints: CheckpointRetention = Field(default_factory=CheckpointRetention)
    base_checkpoint_id: str | None = Field(
        None,
        max_length=100,
        description="Start from the weights of another job's checkpoint (`GET "
        "/v1/jobs/{id}/checkpoints`). That job's kind, model, base model and method are kept; "
        "this spec decides the rest (epochs, learning rate, data).",
    )
    integrations: list[Integration] = Field(
        default_factory=list,
        max_length=MAX_INTEGRATIONS,
        description="Where else the job is logged, e.g. an MLflow tracking server.",
    )

    @field_validator("integrations")
    @classmethod
    def _each_once(cls, integrations: list[MlflowIntegration]) -> list[MlflowIntegration]:
        places = [(i.type, i.tracking_uri, i.experiment) for i in integrations]
        if len(set(places)) < len(places):
            raise ValueError("names the same integration twice: its run would be logged twice")
        return integrations


class PretrainSpec(_JobSpecBase):
    kind: Literal["pretrain"]
    model: ModelSpec
    method: MethodSpec
    data: TrainData


class FinetuneSpec(_JobSpecBase):
    """Exactly one of `model` (train from scratch) and `base_model_id` (start from a model)."""

    kind: Literal["finetune"]
    model: ModelSpec | None = None
    base_model_id: str | None = Field(None, max_length=220, description=BASE_MODEL_DESCRIPTION)
    # A value rather than a factory, so that the JSON Schema (and the dashboard's form) shows it.
    method: MethodSpec = MethodSpec(name="supervised")
    data: TrainData


class AdaptSpec(_JobSpecBase):
    kind: Literal["adapt"]
    model: ModelSpec | None = None
    base_model_id: str | None = Field(None, max_length=220, description=BASE_MODEL_DESCRIPTION)
    method: MethodSpec
    data: AdaptData


JobSpec = Annotated[PretrainSpec | FinetuneSpec | AdaptSpec, Field(discriminator="kind")]


# Substrings that name an error, where a smaller figure is the better one.
LOWER_IS_BETTER = ("loss", "mae", "rmse", "mase", "perplexity")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is the better one: a loss, an error (MAE, RMSE,
    MASE, per target too: `test_mae_sales`) or a perplexity, by its name; any other figure
    (accuracy, F1, R², ...) is better higher. A sweep's objective defaults by it."""
    return any(word in metric for word in LOWER_IS_BETTER)
