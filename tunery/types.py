"""The SDK's data types: the server's own pydantic models, so the SDK and the API cannot
disagree. `app.schemas` and `trainer.spec` import only pydantic (no FastAPI, SQLAlchemy
or torch), which `tests/test_sdk.py` checks. `SweepSpec` (`app.sweep_spec`) also builds
Optuna's samplers and pruners, so it imports Optuna: it is loaded only when asked for
(`from tunery.types import SweepSpec`), and `import tunery` stays light."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.schemas import AliasMoveOut as AliasMove
from app.schemas import AliasOut as Alias
from app.schemas import BestTrial, JobError, Page, Progress, RegisteredModelDetail, TrialCounts
from app.schemas import CheckpointOut as Checkpoint
from app.schemas import DatasetOut as Dataset
from app.schemas import EventOut as Event
from app.schemas import JobOut as Job
from app.schemas import MetricPointOut as MetricPoint
from app.schemas import ModelOut as Model
from app.schemas import ModelVersionOut as ModelVersion
from app.schemas import PredictResponse as Prediction
from app.schemas import RegisteredModelOut as RegisteredModel
from app.schemas import SweepOut as Sweep
from app.schemas import TrialOut as Trial
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

if TYPE_CHECKING:
    from app.sweep_spec import SweepSpec

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "pruned"})
SWEEP_FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's live stream. `status` and `end` carry the Job (`end` the final
    one), `metric` a MetricPoint, `log` an Event; `id` resumes the stream after it."""

    type: Literal["status", "metric", "log", "end"]
    data: Job | MetricPoint | Event
    id: str | None


@dataclass(frozen=True)
class SweepEvent:
    """One event of a sweep's live stream: `trial` carries a Trial (when it starts, after each
    epoch, when it ends), `status` the Sweep (first and on every change), `end` the final one."""

    type: Literal["trial", "status", "end"]
    data: Sweep | Trial


def __getattr__(name: str) -> Any:
    if name == "SweepSpec":  # imports Optuna: only when asked for
        from app.sweep_spec import SweepSpec

        return SweepSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FINAL_STATUSES",
    "SWEEP_FINAL_STATUSES",
    "AdaptData",
    "AdaptSpec",
    "Alias",
    "AliasMove",
    "BestTrial",
    "Checkpoint",
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
    "ModelVersion",
    "Page",
    "Prediction",
    "PretrainSpec",
    "Progress",
    "RegisteredModel",
    "RegisteredModelDetail",
    "Resources",
    "StreamEvent",
    "Sweep",
    "SweepEvent",
    "SweepSpec",
    "TrainData",
    "Trial",
    "TrialCounts",
]
