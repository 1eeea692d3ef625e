"""What a trainer is asked to run: RUN_DIR/run.json, written by the worker's supervisor with
`RunRequest.model_dump_json()` and read by `trainer.main` with `model_validate_json`.

The one contract between the two processes: the job spec, where to find the base model and
the uploaded datasets, where to write the new model, and where to keep a checkpoint.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer.heads import HEADS
from trainer.spec import JobSpec
from trainer.streaming import DatasetStream


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetFile(_Strict):
    """An uploaded dataset as the trainer reads it: a local copy of its file."""

    path: Path
    format: str
    labelled: bool
    # regression: one or more target columns, comma-separated; forecasting: series columns
    label_column: str = "label"
    task: str = "classification"  # what its labels are for: a task head's name
    time_column: str | None = None  # forecasting: the column of its times

    @field_validator("task")
    @classmethod
    def _a_task_head(cls, task: str) -> str:
        if task not in HEADS:
            raise ValueError(f"unknown task {task!r}; the task heads are {', '.join(HEADS)}")
        return task


class RunRequest(_Strict):
    job_id: str
    model_id: str  # the new model's id, written into its card
    spec: JobSpec
    base_model_path: Path | None = None
    datasets: dict[str, DatasetFile] = Field(default_factory=dict)  # uploads, by dataset name
    # Datasets too large for memory, read as streams of shards (`trainer.streaming`), by name.
    streams: dict[str, DatasetStream] = Field(default_factory=dict)
    output_path: Path  # where the model file goes
    checkpoint_dir: Path | None = None  # None: no checkpoints
    checkpoint_every_steps: int | None = Field(None, ge=1)
    # Another job's checkpoint, whose weights the run starts from (`base_checkpoint_id`).
    start_checkpoint_path: Path | None = None

    @model_validator(mode="after")
    def _checkpoint_interval(self) -> "RunRequest":
        if self.checkpoint_dir is not None and self.checkpoint_every_steps is None:
            raise ValueError("a `checkpoint_dir` needs its `checkpoint_every_steps`")
        if self.start_checkpoint_path is not None and self.checkpoint_dir is None:
            raise ValueError("a `start_checkpoint_path` needs a `checkpoint_dir`")
        return self
