"""The SDK's data types: the server's own pydantic models, so the SDK and the API cannot
disagree. `app.schemas` and `trainer.spec` import only pydantic (no FastAPI, SQLAlchemy
or torch), which `tests/test_sdk.py` checks."""

from dataclasses import dataclass
from typing import Literal

from app.schemas import DatasetOut as Dataset
from app.schemas import EventOut as Event
from app.schemas import JobError, Page, Progress
from app.schemas import JobOut as Job
from app.schemas import MetricPointOut as MetricPoint
from app.schemas import ModelOut as Model
from app.schemas import PredictResponse as Prediction
from trainer.spec import (
    AdaptData,
    AdaptSpec,
    DatasetSelection,
    FinetuneSpec,
    Hyperparameters,
    JobSpec,
    MethodSpec,
    ModelSpec,
    PretrainSpec,
    Resources,
    TrainData,
)

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "pruned"})


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's live stream. `status` and `end` carry the Job (`end` the final
    one), `metric` a MetricPoint, `log` an Event; `id` resumes the stream after it."""

    type: Literal["status", "metric", "log", "end"]
    data: Job | MetricPoint | Event
    id: str | None


__all__ = [
    "FINAL_STATUSES",
    "AdaptData",
    "AdaptSpec",
    "Dataset",
    "DatasetSelection",
    "Event",
    "FinetuneSpec",
    "Hyperparameters",
    "Job",
    "JobError",
    "JobSpec",
    "MethodSpec",
    "MetricPoint",
    "Model",
    "ModelSpec",
    "Page",
    "Prediction",
    "PretrainSpec",
    "Progress",
    "Resources",
    "StreamEvent",
    "TrainData",
]
