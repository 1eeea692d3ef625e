"""The API's response and request bodies (job specs themselves are in `trainer.spec`)."""

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from trainer.spec import Text

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


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


DatasetTask = Literal["classification", "pretraining"]


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    task: DatasetTask
    format: str
    modality: Literal["image", "tabular", "text"]
    num_examples: int
    input_shape: list[int] = Field(description="One example's shape; [] for text.")
    feature_names: list[str] | None = Field(
        description="Tabular: the model's input features, categorical columns one-hot encoded."
    )
    labels: list[str]
    class_counts: dict[str, int]
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
