"""The API's response and request bodies (job specs themselves are in `trainer.spec`)."""

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from trainer.card import TableColumn
from trainer.spec import MAX_SCORED_EXAMPLES, ModelSpec, Text

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )


class JobError(BaseModel):
    type: str
    message: str


class Progress(BaseModel):
    step: int
    epoch: int
    total_steps: int | None


JobStatus = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled", "pruned"]


class JobOut(BaseModel):
    id: str
    kind: str
    name: str | None
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    error: JobError | None
    result_model_id: str | None
    metrics: dict[str, float]
    progress: Progress
    spec: dict[str, Any]
    sweep_id: str | None = None  # a sweep's trial: its sweep and trial number
    trial_number: int | None = None
    # Running, and asked to pause: its trainer checkpoints and stops at its next heartbeat.
    pause_requested: bool = False
    base_checkpoint_job_id: str | None = Field(
        None, description="Started from a checkpoint (`base_checkpoint_id`): that one's job."
    )


class CheckpointOut(BaseModel):
    """A checkpoint of a job, kept by its retention policy (`checkpoints` in its spec)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    step: int
    epoch: int = Field(description="The epoch it was taken in (at its end, with `metrics`).")
    metrics: dict[str, float] = Field(
        description="The epoch's validation figures, for a checkpoint taken at an epoch's end."
    )
    size_bytes: int
    created_at: datetime


class MetricPointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    epoch: int
    name: str
    value: float
    split: str
    time: datetime
    attempt: int


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    time: datetime
    type: Literal["status", "log"]
    status: str | None
    message: str
    attempt: int


class Ancestor(BaseModel):
    id: str
    name: str | None
    kind: str | None = Field(description="The job kind that made it; null when imported.")
    method: str | None
    source_job_id: str | None
    deleted: bool


class ModelOut(BaseModel):
    id: str
    name: str | None
    tags: list[str]
    architecture: str
    params: dict[str, Any]
    task: str
    modality: str | None = Field(
        None, description="What it reads: text, image, tabular, series or audio (waveforms)."
    )
    input_shape: list[int]
    feature_names: list[str] | None
    labels: list[str]
    # A default: responses stored for idempotent replays before this field existed lack it.
    targets: list[str] = Field(
        default_factory=list, description="Regression: the targets it predicts, in order."
    )
    columns: list[TableColumn] | None = Field(
        None,
        description="Tabular: the columns a row to predict gives, by name; a categorical "
        "column's `categories` are the values it takes.",
    )
    thresholds: list[float] | None = Field(
        None, description="Multilabel: each label's threshold, tuned on the validation split."
    )
    metrics: dict[str, float]
    kind: str | None
    method: str | None
    spec: dict[str, Any] | None = Field(description="The spec of the job that made it.")
    datasets: dict[str, str | None] = Field(
        description="Datasets it was trained on: name -> sha256 of the upload (null: built-in)."
    )
    source_job_id: str | None
    parent_model_id: str | None
    lineage: list[Ancestor] = Field(
        description="Its ancestors, the first pretrained base first, its parent last."
    )
    created_at: datetime
    sha256: str
    size_bytes: int


Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:/-]+$")]


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=50, description="Replaces all tags.")


class RegisterVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: Text = Field(
        min_length=1,
        max_length=220,
        description="The model to register: its id, or another registered version "
        "(`name@alias`, `name/versions/N`).",
    )


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=999_999_999, description="The version the alias points at.")


class AliasOut(BaseModel):
    alias: str
    version: int
    model_id: str
    updated_at: datetime


class ModelVersionOut(BaseModel):
    name: str = Field(description="The registered model's name.")
    version: int
    model_id: str
    created_at: datetime
    registered_by_key_id: str | None = Field(
        description="The API key that registered it; null when its job did (`register_as`)."
    )
    registered_by_job_id: str | None = Field(
        description="The job that registered its model as it succeeded (`register_as`)."
    )
    deleted: bool = Field(description="Its model was deleted: the version's number stays taken.")
    aliases: list[str] = Field(description="The aliases that point at it.")


class AliasMoveOut(BaseModel):
    alias: str
    from_version: int | None = Field(description="Null: the alias was made by this move.")
    to_version: int | None = Field(description="Null: the alias was deleted by this move.")
    key_id: str = Field(description="The API key that moved it.")
    time: datetime


class RegisteredModelOut(BaseModel):
    name: str
    created_at: datetime
    latest_version: int
    aliases: list[AliasOut]


class RegisteredModelDetail(RegisteredModelOut):
    versions: list[ModelVersionOut] = Field(description="Every version, the first first.")
    alias_history: list[AliasMoveOut] = Field(description="Every move of an alias, oldest first.")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        min_length=1,
        max_length=4096,
        description="A batch of raw inputs, each of the model's `input_shape`. Text models: "
        "strings. Tabular models also take rows as objects keyed by column name, as the "
        "uploaded table has them (categories as strings), every column given; a forecaster's "
        "context may also be its last `context_length` rows as the table has them. Audio "
        "models: each a clip, a list of samples at the model's `log_mel.sample_rate` or a "
        "base64 WAV or FLAC file at any rate, of at most `input_shape[0]` samples at the "
        "model's rate (shorter clips are zero-padded).",
    )
    return_embeddings: bool = False


class PredictResponse(BaseModel):
    """A classifier's answer (`predictions`, `probabilities`, `labels`), a multilabel model's
    (`label_sets`, `probabilities`, `labels`, `thresholds`), a regressor's (`values`,
    `targets`) or a forecaster's (`forecasts`, `targets`); the other tasks' fields are null."""

    predictions: list[str] | None = Field(None, description="Classification: each input's label.")
    label_sets: list[list[str]] | None = Field(
        None,
        description="Multilabel: each input's labels, those whose probability reaches their "
        "threshold (possibly none).",
    )
    probabilities: list[list[float]] | None = Field(
        None,
        description="Classification and multilabel: each input's probability of each label.",
    )
    labels: list[str] | None = Field(
        None, description="Classification, multilabel and token tagging: the labels, in order."
    )
    thresholds: list[float] | None = Field(
        None, description="Multilabel: each label's threshold, tuned on the validation split."
    )
    values: list[list[float]] | None = Field(
        None, description="Regression: each input's predicted targets, in their units."
    )
    forecasts: list[dict[str, list[float]]] | None = Field(
        None,
        description="Forecasting: for each context, the next `horizon` values of each series, "
        "in its units, by series name.",
    )
    targets: list[str] | None = Field(
        None, description="Regression: the targets, in order; forecasting: the series."
    )
    tags: list[list[str]] | None = Field(
        None, description="Token tagging: each input word's tag (its `labels`' names)."
    )
    words: list[list[str]] | None = Field(
        None,
        description="Token tagging: each input's words, as tagged (a text split at whitespace).",
    )
    embeddings: list[list[Any]] | None = Field(
        None, description="Token tagging: a vector per token; the others: one per input."
    )


# Generation, by tunery's own route and by OpenAI's chat completions. The settings are OpenAI's,
# with its bounds; `trainer.generation.Sampling` checks them again (it imports torch, which the
# SDK that reads this module does not load).
ChatRole = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]
FINISH_REASON_DESCRIPTION = (
    "`stop`: the model ended its answer, or a stop text came; `length`: `max_tokens` or the "
    "model's `max_length` was reached."
)
StopText = Annotated[str, StringConstraints(min_length=1)]
# OpenAI's `stop`: a text, or a list of up to 4; read as a list, so that errors name `stop.<i>`.
Stop = Annotated[
    list[StopText],
    Field(max_length=4),
    BeforeValidator(lambda stop: [stop] if isinstance(stop, str) else stop),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
            ]
        }
    ),
]


class ChatMessage(BaseModel):
    """A turn of a conversation, as OpenAI's chat messages have it (text only)."""

    model_config = ConfigDict(extra="forbid")

    role: ChatRole
    content: str


class SamplingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, le=32_768, description="New tokens, at most.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 always takes the likeliest token.")
    top_p: float = Field(1.0, gt=0, le=1, description="Sample from the likeliest tokens whose "
                         "probabilities add up to top_p.")  # fmt: skip
    stop: Stop = Field(
        default_factory=list,
        description="A text, or up to 4, that ends the answer where it appears (left out).",
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="The same seed and settings "
                             "give the same answer.")  # fmt: skip


class GenerateRequest(SamplingSettings):
    prompt: str | None = Field(None, description="Text to continue; or give `messages`.")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="A conversation to answer, in the model's chat template."
    )
    stream: bool = Field(False, description="Server-Sent Events as the text is sampled.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str
    finish_reason: FinishReason = Field(description=FINISH_REASON_DESCRIPTION)
    usage: Usage
    model: str = Field(description="The model's id.")


class GeneratedText(BaseModel):
    """A `text` event of a streamed generation: the next piece of the answer."""

    text: str


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="A last chunk with the token counts.")


class ChatCompletionRequest(SamplingSettings):
    """OpenAI's chat completion request, for the settings tunery's models support. A setting
    sent as null is a setting not given, as in OpenAI's API."""

    model: Text = Field(
        max_length=220,
        description="A `causal_lm` model: its id, or a registered version (`name@alias`, "
        "`name/versions/N`).",
    )
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        None, ge=1, le=32_768, description="OpenAI's newer name of `max_tokens`; wins over it."
    )
    n: int = Field(1, description="Choices: only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if value is not None}
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise PydanticCustomError("one_choice", "only n=1 is supported: one choice per request")
        return n

    @model_validator(mode="after")
    def _newer_name_wins(self) -> "ChatCompletionRequest":
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: FinishReason = Field(description=FINISH_REASON_DESCRIPTION)
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time, in seconds.")
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage


class ChatCompletionDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(BaseModel):
    index: int = 0
    delta: ChatCompletionDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: Usage | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, or `server_error` for a 5xx.")
    param: str | None = Field(description="The first parameter at fault.")
    code: str | None


class OpenAIError(BaseModel):
    """An error as OpenAI's API answers it."""

    error: OpenAIErrorDetail


class ScoredExamples(BaseModel):
    """Which of the dataset's examples a transferability score reads."""

    model_config = ConfigDict(extra="forbid")

    fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Score on this stratified share of the training split: the examples a job "
        'with `{"dataset": …, "fraction": …}` and the same `seed` trains on. Default: all of '
        f"it (at most {MAX_SCORED_EXAMPLES:,} examples: past that, a stratified subsample).",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Draws the `fraction` subset.")


class TransferabilityRequest(ScoredExamples):
    dataset: Text = Field(
        min_length=1,
        max_length=200,
        description="A labelled dataset: an uploaded dataset's id or a built-in.",
        examples=["builtin:digits"],
    )


TransferabilityMetric = Literal["logme"]
SCORE_DESCRIPTION = (
    "LogME: the mean over classes (or labels, or standardised targets) of the maximum log "
    "evidence per example of a Bayesian linear model from the features to the labels. Higher "
    "is better; comparable between models scored on the same examples only."
)


class TransferabilityOut(BaseModel):
    metric: TransferabilityMetric
    score: float = Field(description=SCORE_DESCRIPTION)
    model_id: str
    dataset: str
    examples: int = Field(description="Examples the score read (the forward pass's size).")
    feature_dim: int = Field(description="Features per example: the backbone's output.")


# Candidates of a ranking that names none: the tenant's newest models that fit, up to this many.
NEWEST_CANDIDATES = 20


class RankModelsRequest(ScoredExamples):
    model_ids: list[Annotated[Text, StringConstraints(min_length=1, max_length=220)]] | None = (
        Field(
            None,
            min_length=1,
            max_length=50,
            description=f"Candidate bases. Default: the tenant's {NEWEST_CANDIDATES} newest "
            "models that read the dataset's inputs.",
        )
    )
    models: list[ModelSpec] = Field(
        default_factory=list,
        max_length=10,
        description="Candidates without a base, each as a job's `model` starts: fresh weights "
        "(drawn by `seed`) for training from scratch, or an architecture's pretrained weights "
        "(`hf_encoder`).",
    )


class RankedModel(BaseModel):
    rank: int = Field(description="1 for the highest score; ties keep the request's order.")
    score: float = Field(description=SCORE_DESCRIPTION)
    model_id: str | None = Field(description="A stored model; null for an entry of `models`.")
    model: ModelSpec | None = Field(description="The entry of `models`; null for a stored model.")
    name: str | None
    architecture: str
    feature_dim: int


class RankModelsOut(BaseModel):
    metric: TransferabilityMetric
    dataset: str
    examples: int = Field(description="Examples every candidate was scored on.")
    ranking: list[RankedModel] = Field(description="Best first.")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


# Every task head's (trainer.heads.HEADS, which imports torch: this module must not; a test
# checks that the list holds them all), and the tasks of unlabelled data.
DatasetTask = Literal[
    "classification",
    "regression",
    "multilabel",
    "token_classification",
    "forecasting",
    "pretraining",
    "chat",
]


class TokenCounts(BaseModel):
    tokenizer: str = Field(
        description="What counted them: a configured Hugging Face causal LM's name or a "
        "causal_lm model's id, with its tokenizer and chat template."
    )
    tokens: int = Field(
        description="Over every example, as fine-tuning reads it: a chat example rendered by "
        "the chat template, a prompt and its completion, a preference pair's longer answer "
        "after its conversation."
    )
    longest_example: int = Field(
        description="The tokens of the longest example: what the model's `max_length` must hold "
        "for none to be refused or cut."
    )


class SeriesOut(BaseModel):
    time_column: str
    season: int = Field(description="Rows per season, from the times' spacing (1: none).")
    context_length: int = Field(description="The windows' default context, in rows.")
    horizon: int = Field(description="The windows' default forecast, in rows.")
    part_rows: list[int] = Field(description="Rows of train, validation, test, in time order.")


class ShardOut(BaseModel):
    key: str = Field(
        description="The shard: an S3 object's URL, or an upload's key in the artifact store."
    )
    format: Literal["jsonl", "parquet"]
    size_bytes: int
    etag: str | None = Field(
        description="An S3 object's ETag when it was checked: a job reads this version or fails."
    )
    rows: int
    train_rows: int


class StreamOut(BaseModel):
    source: str | None = Field(
        description="The S3 prefix the dataset was registered from; None for an upload."
    )
    drawn: list[str] = Field(
        description="The held-out parts (validation, test) drawn from the training rows by "
        "their place, as the file gives none: 10% and 20% of them."
    )
    shards: list[ShardOut]


class RegisterDatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    task: Literal["classification", "multilabel", "pretraining"]
    uri: str = Field(
        min_length=6,
        max_length=1000,
        description="An S3 prefix (`s3://bucket/prefix/`) under which every `.jsonl` or "
        "`.parquet` file (one format) is a shard of text examples; within the sources the "
        "operator allows (`TUNERY_DATASET_SOURCES`).",
        examples=["s3://corpora/web/2027-01/"],
    )


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    task: DatasetTask
    format: str
    modality: Literal["image", "tabular", "text", "audio", "chat", "preference", "series"]
    num_examples: int
    input_shape: list[int] = Field(
        description="One example's shape; [] for text; audio: [samples] of a clip at 16 kHz."
    )
    feature_names: list[str] | None = Field(
        description="Tabular: the model's input features, categorical columns one-hot encoded."
    )
    labels: list[str]
    targets: list[str] | None = Field(
        None,
        description="Regression: the numeric target columns, in the model's order; "
        "forecasting: the series columns.",
    )
    series: SeriesOut | None = Field(None, description="Forecasting: how the series is read.")
    class_counts: dict[str, int] = Field(
        description="The examples of each label (multilabel: that have it, so an example may "
        "count under several; token tagging: the words with each tag)."
    )
    # A default: responses stored for idempotent replays before this field existed lack it.
    role_counts: dict[str, int] | None = Field(
        None,
        description=(
            "Chat and preference datasets: messages per role (system, user, assistant), a "
            "prompt counted as a user message and a completion as an assistant message; "
            "preference datasets count their inputs' messages, and their preferred and "
            "non-preferred answer pairs under `pairs`."
        ),
    )
    token_counts: TokenCounts | None = Field(
        None,
        description="Chat and preference datasets uploaded with a `tokenizer`: their tokens "
        "under it.",
    )
    splits: dict[str, int] = Field(
        description="Examples in each of train, validation, test (a series: its default windows)."
    )
    stream: StreamOut | None = Field(
        None,
        description="A dataset too large to read whole (a large text upload, or one registered "
        "by reference): its shards, checked row by row, which jobs stream.",
    )
    label_column: str | None
    sha256: str
    size_bytes: int
    created_at: datetime


class PreviewImage(BaseModel):
    label: str | None
    png_base64: str


class DatasetPreview(BaseModel):
    rows: list[dict[str, Any]] | None = None
    images: list[PreviewImage] | None = None


SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TrialState = Literal["running", "completed", "pruned", "failed"]


class TrialCounts(BaseModel):
    running: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0


class BestTrial(BaseModel):
    number: int
    params: dict[str, Any]
    value: float = Field(description="The objective: on validation (or train), never on test.")
    job_id: str | None
    model_id: str | None
    test_metrics: dict[str, float] = Field(
        description="The best trial's metrics on the held-out test split, beside its objective."
    )


class SweepOut(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: datetime
    finished_at: datetime | None
    trials: TrialCounts
    best_trial: BestTrial | None
    direction: Literal["minimize", "maximize"] = Field(
        description="Which way the objective is better: the spec's, or its metric's default."
    )
    importances: dict[str, float] | None = Field(
        None, description="Each parameter's importance (fANOVA), once 3 trials completed."
    )
    spec: dict[str, Any]


class TrialOut(BaseModel):
    number: int
    job_id: str | None
    params: dict[str, Any]
    state: TrialState
    value: float | None
    intermediate_values: dict[int, float] = Field(description="The objective after each epoch.")


WebhookEventType = Literal[
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.paused",
    "sweep.succeeded",
    "sweep.failed",
    "sweep.cancelled",
    "model.alias_moved",
]
WebhookEvents = Annotated[
    list[WebhookEventType],
    Field(min_length=1, max_length=len(get_args(WebhookEventType))),
    AfterValidator(lambda events: list(dict.fromkeys(events))),  # each once, in the given order
]
WebhookUrl = Annotated[
    Text,
    Field(
        max_length=2000,
        description="Where events are POSTed: https, at a public address (docs/WEBHOOKS.md).",
        examples=["https://example.com/hooks/tunery"],
    ),
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: WebhookEvents


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    enabled: bool | None = Field(None, description="A disabled webhook is sent nothing.")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[WebhookEventType]
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="`whsec_…`: verifies the signature of each delivery. Shown only now."
    )


class WebhookAttemptOut(BaseModel):
    number: int
    time: datetime
    response_status: int | None = Field(description="The receiver's answer; null if none came.")
    error: str | None
    duration_ms: float


class WebhookDeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event_id: str = Field(description="The `webhook-id` header, the same on every attempt.")
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_response_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[WebhookAttemptOut] = Field(description="Each request made, oldest first.")


class ArchitectureOut(BaseModel):
    name: str = Field(description="What `model.architecture` names.")
    modalities: list[str] = Field(
        description="The data it reads: image, audio, tabular, text, series."
    )
    pretrained: bool = Field(
        description="It starts from weights trained elsewhere (a configured Hugging Face model), "
        "not from random ones."
    )
    supports_lora: bool = Field(description="LoRA adapters can be trained on it (`lora_rank`).")
    params_schema: dict[str, Any] = Field(description="The JSON Schema of its `model.params`.")


class MethodOut(BaseModel):
    name: str = Field(description="What `method.name` names.")
    kind: str = Field(description="The job kind it serves: pretrain, finetune or adapt.")
    modalities: list[str] = Field(description="The data it reads.")
    validation_metrics: list[str] = Field(
        description="What it reports on the validation split after every epoch: a sweep's "
        "`objective.metric` may be any of them."
    )
    params_schema: dict[str, Any] = Field(description="The JSON Schema of its `method.params`.")


class SpecCatalog(BaseModel):
    """What a job spec may name beyond its own schema (`POST /v1/jobs` in /openapi.json), where
    `model.params` and `method.params` are open objects: each architecture's and method's
    params, and the built-in datasets."""

    architectures: list[ArchitectureOut]
    methods: list[MethodOut]
    builtin_datasets: list[str] = Field(description="Dataset names every tenant may train on.")
