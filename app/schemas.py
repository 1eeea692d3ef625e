"""The API's response and request bodies (job specs themselves are in `trainer.spec`)."""

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]


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
    input_shape: list[int]
    feature_names: list[str] | None
    labels: list[str]
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


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        min_length=1,
        max_length=4096,
        description="A batch of raw inputs, each of the model's `input_shape`.",
    )
    return_embeddings: bool = False


class PredictResponse(BaseModel):
    predictions: list[str]
    probabilities: list[list[float]]
    labels: list[str]
    embeddings: list[list[float]] | None = None


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
    "LogME: the mean over classes of the maximum log evidence per example of a Bayesian linear "
    "model from the features to the labels. Higher is better; comparable between models scored "
    "on the same examples only."
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
    model_ids: list[Annotated[Text, StringConstraints(min_length=1, max_length=100)]] | None = (
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


DatasetTask = Literal["classification", "pretraining", "chat"]


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    task: DatasetTask
    format: str
    modality: Literal["image", "tabular", "text", "chat", "preference"]
    num_examples: int
    input_shape: list[int] = Field(description="One example's shape; [] for text.")
    feature_names: list[str] | None = Field(
        description="Tabular: the model's input features, categorical columns one-hot encoded."
    )
    labels: list[str]
    class_counts: dict[str, int]
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
    splits: dict[str, int] = Field(description="Examples in each of train, validation, test.")
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
