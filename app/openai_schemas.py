"""The bodies of OpenAI's files and fine-tuning routes (`app/api/openai_files.py`,
`app/api/openai_fine_tuning.py`), in OpenAI's shapes, for OpenAI's client libraries. The bounds
of the hyperparameters are those of the job spec they become (`trainer.spec.Hyperparameters`,
the `dpo` method's params), read from it, so that both routes refuse the same values."""

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from trainer.methods import dpo
from trainer.spec import Hyperparameters, Text

T = TypeVar("T")

# What a `learning_rate_multiplier` multiplies. OpenAI scales the base model's own pretraining
# rate, which tunery does not know of a Hugging Face directory; 3e-4 is the peak rate at which
# Llama 2 and 3 (7-8B) were pretrained, between GPT-3's 6e-4 (125M) and 2e-4 (1.3B), so that
# the "auto" multipliers (0.05-0.2) give 1.5e-5 to 6e-5, the usual rates of full fine-tuning.
BASE_LEARNING_RATE = 3e-4


def _bound(model: type[BaseModel], field: str, bound: str) -> float:
    """A bound (`le`, `gt`...) of a field of a spec model."""
    return next(
        getattr(rule, bound) for rule in model.model_fields[field].metadata if hasattr(rule, bound)
    )


def _auto_or(kind: type, **bounds: float) -> Any:
    """A number within `bounds`, or "auto" (read as None: the service picks the value)."""
    number = Annotated[kind, Field(**bounds)]
    return Annotated[
        number | None,
        BeforeValidator(lambda value: None if value == "auto" else value),
        WithJsonSchema({"anyOf": [TypeAdapter(number).json_schema(), {"const": "auto"}]}),
    ]


NEpochs = _auto_or(int, ge=1, le=_bound(Hyperparameters, "epochs", "le"))
BatchSize = _auto_or(int, ge=1, le=_bound(Hyperparameters, "batch_size", "le"))
LearningRateMultiplier = _auto_or(
    float, gt=0, le=_bound(Hyperparameters, "learning_rate", "le") / BASE_LEARNING_RATE
)
Beta = _auto_or(float, gt=0, le=_bound(dpo.Params, "beta", "le"))


def _auto(description: str) -> Any:
    return Field("auto", validate_default=True, description=description)


class SupervisedHyperparameters(BaseModel):
    """Each a number or "auto" (the default), resolved from the size of the training file's
    train split as OpenAI resolves it (`app.services.openai_fine_tuning`)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = _auto(
        "auto: 3, more for a small training set (until about 100 examples are seen, at most "
        "25 epochs), fewer for a large one (about 25,000, at least 1)."
    )
    batch_size: BatchSize = _auto("auto: 0.2% of the training examples, from 1 to 256.")
    learning_rate_multiplier: LearningRateMultiplier = _auto(
        f"The learning rate is this times {BASE_LEARNING_RATE}. auto: 0.05 under a batch size "
        "of 16, 0.1 under 64, else 0.2."
    )


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Beta = _auto(
        "How far from the reference the model may move: higher keeps it closer. "
        f"auto: {dpo.Params.model_fields['beta'].default}."
    )


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparameters | None = None


class FineTuningMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"] = Field(
        description="`supervised`: tunery's `sft`; `dpo`: its `dpo`, on a preference file."
    )
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> "FineTuningMethod":
        other = "dpo" if self.type == "supervised" else "supervised"
        if getattr(self, other) is not None:
            raise ValueError(f"`{other}` settings given for a method of type {self.type!r}")
        return self


MetadataKey = Annotated[Text, StringConstraints(max_length=64)]
MetadataValue = Annotated[Text, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


class FineTuningJobRequest(BaseModel):
    """OpenAI's fine-tuning job request, for what tunery trains: causal language models by
    `sft` or `dpo`."""

    model_config = ConfigDict(extra="forbid")

    model: Text = Field(
        min_length=1,
        max_length=100,
        description="A tunery model of task `causal_lm`: its id (`model_…`) or a registered "
        "version (`name@alias`, `name/versions/N`); or the name of a "
        "Hugging Face causal LM directory configured in `TUNERY_HF_MODEL_DIRS`.",
    )
    training_file: Text = Field(min_length=1, max_length=200, description="A file's id.")
    validation_file: Text | None = Field(None, min_length=1, max_length=200)
    hyperparameters: SupervisedHyperparameters | None = Field(
        None, description="Deprecated by OpenAI in favour of `method`; read when it has none."
    )
    method: FineTuningMethod | None = Field(None, description="Default: `supervised`.")
    suffix: Text | None = Field(
        None, min_length=1, max_length=64, description="Part of the fine-tuned model's name."
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=_bound(Hyperparameters, "seed", "le"),
        description="Default: 0; the same request trains the same model.",
    )
    metadata: Metadata | None = None


class OpenAIList(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = Field(description="Pass the last item's id as `after` for the next page.")


class OpenAIFile(BaseModel):
    """A tunery dataset of task `chat`, by OpenAI's File object: its id is the dataset's."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(description="Unix time, in seconds.")
    filename: str = Field(description="The uploaded file's name (the dataset's `name`).")
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["processed"] = Field(
        "processed", description="A file is checked whole as it is uploaded."
    )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ResolvedHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class ResolvedDpoHyperparameters(ResolvedHyperparameters):
    beta: float


class ResolvedSupervisedMethod(BaseModel):
    hyperparameters: ResolvedHyperparameters


class ResolvedDpoMethod(BaseModel):
    hyperparameters: ResolvedDpoHyperparameters


class ResolvedMethod(BaseModel):
    type: Literal["supervised", "dpo"]
    supervised: ResolvedSupervisedMethod | None = None
    dpo: ResolvedDpoMethod | None = None


class FineTuningJobError(BaseModel):
    code: str = Field(description="tunery's error type, e.g. `invalid_data`.")
    message: str
    param: str | None = None


FineTuningJobStatus = Literal[
    "validating_files", "queued", "running", "succeeded", "failed", "cancelled"
]


class FineTuningJob(BaseModel):
    """A tunery job of method `sft` or `dpo`, made by either route, by OpenAI's
    `fine_tuning.job`."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str = Field(description="The base: a model id, or a Hugging Face directory's name.")
    fine_tuned_model: str | None = Field(
        description="The id of the model the job made, once it succeeded: a `model` for chat "
        "completions."
    )
    organization_id: str = Field(description="The tenant.")
    status: FineTuningJobStatus = Field(
        description="tunery's status; `validating_files` is never reported: files are checked "
        "whole as they are uploaded, and what the job reads of them as it is submitted, so a "
        "job exists only once they passed. A sweep's pruned trial is `cancelled`."
    )
    hyperparameters: ResolvedHyperparameters
    training_file: str
    validation_file: str | None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None
    error: FineTuningJobError | None
    seed: int
    metadata: dict[str, str] | None
    method: ResolvedMethod
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    user_provided_suffix: str | None


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = Field(
        description="`metrics`: `step`, `epoch` and the metric, named as OpenAI does "
        "(`train_loss`, `valid_loss`, `valid_mean_token_accuracy`...)."
    )


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str = Field(description="The model's id.")
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str = Field(description="A `model` for chat completions.")
    step_number: int
    metrics: CheckpointMetrics
    fine_tuning_job_id: str
