"""How the `tunery` command shows jobs, datasets, models and a job's live progress."""

from collections.abc import Iterable
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunery.types import Dataset, Event, Job, MetricPoint, Model, Prediction

SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "pruned": "magenta",
}


def _time(moment: datetime | None) -> str:
    return f"{moment.astimezone():%Y-%m-%d %H:%M:%S}" if moment else ""


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))


# The one metric a list shows: the first of these that the model has.
HEADLINE = (
    "test_accuracy",
    "validation_accuracy",
    "val_perplexity",
    "validation_loss",
    "train_loss",
)


def _headline(metrics: dict[str, float]) -> str:
    name = next((n for n in HEADLINE if n in metrics), None)
    return f"{name} {metrics[name]:.4g}" if name else ""


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table("id", "name", "kind", "status", "created", "model", box=None)
    for job in jobs:
        table.add_row(
            job.id,
            escape(job.name or ""),
            job.kind,
            _status(job.status),
            _time(job.created_at),
            job.result_model_id or "",
        )
    return table


def job_details(job: Job) -> Table:
    table = Table(show_header=False, box=None)
    progress = job.progress
    steps = f"{progress.step}/{progress.total_steps}" if progress.total_steps else progress.step
    rows = [
        ("id", job.id),
        ("name", escape(job.name or "")),
        ("kind", f"{job.kind} ({job.spec.get('method', {}).get('name', '')})"),
        ("status", _status(job.status)),
        ("created", _time(job.created_at)),
        ("started", _time(job.started_at)),
        ("finished", _time(job.finished_at)),
        ("attempt", str(job.attempt)),
        ("progress", f"step {steps}, epoch {progress.epoch}"),
        ("metrics", _metrics(job.metrics)),
        ("model", job.result_model_id or ""),
    ]
    if job.error:
        rows.append(("error", f"[red]{escape(job.error.type)}: {escape(job.error.message)}[/]"))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", value)
    return table


def event_line(event: Event) -> str:
    message = escape(event.message)
    if event.type == "status":
        message = f"[{STATUS_STYLE.get(event.status or '', '')}]{message}[/]"
    return f"[dim]{event.time.astimezone():%H:%M:%S}[/] {message}"


def datasets_table(datasets: Iterable[Dataset]) -> Table:
    table = Table("id", "name", "task", "format", "modality", "examples", "labels", box=None)
    for d in datasets:
        table.add_row(
            d.id,
            escape(d.name),
            d.task,
            d.format,
            d.modality,
            str(d.num_examples),
            str(len(d.labels)),
        )
    return table


def models_table(models: Iterable[Model]) -> Table:
    table = Table("id", "name", "architecture", "made by", "created", "metric", box=None)
    for m in models:
        made_by = f"{m.kind} ({m.method})" if m.kind else "import"
        table.add_row(
            m.id,
            escape(m.name or ""),
            m.architecture,
            made_by,
            _time(m.created_at),
            _headline(m.metrics),
        )
    return table


def predictions_table(prediction: Prediction) -> Table:
    table = Table("#", "prediction", "probability", box=None)
    for i, (label, row) in enumerate(
        zip(prediction.predictions, prediction.probabilities, strict=True)
    ):
        table.add_row(str(i), escape(label), f"{max(row):.4f}")
    return table


class JobMonitor:
    """A running job as the stream tells it: a progress bar (step of total steps, epoch,
    time left) over the latest value of each metric."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.latest: dict[tuple[str, str], MetricPoint] = {}
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("steps  epoch {task.fields[epoch]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("", total=None, epoch=0)
        self.update(job)

    def update(self, job: Job) -> None:
        self.job = job
        self._progress.update(
            self._task,
            description=_status(job.status),
            completed=job.progress.step,
            total=job.progress.total_steps,
            epoch=job.progress.epoch,
        )

    def add(self, point: MetricPoint) -> None:
        self.latest[(point.split, point.name)] = point

    def metrics_table(self) -> Table:
        table = Table("split", "metric", "value", "epoch", title="metrics")
        ordered = sorted(self.latest.items(), key=lambda i: (SPLIT_ORDER.get(i[0][0], 3), i[0]))
        for (split, name), point in ordered:
            table.add_row(split, name, f"{point.value:.4f}", str(point.epoch))
        return table

    def __rich__(self) -> RenderableType:
        return Group(self.job.id, self._progress, self.metrics_table())

    def summary(self) -> str:
        job = self.job
        line = f"{job.id} {_status(job.status)}"
        if job.result_model_id:
            line += f": model {job.result_model_id}"
        if job.error:
            line += f": [red]{escape(job.error.type)}: {escape(job.error.message)}[/]"
        return line


def console(stderr: bool = False) -> Console:
    """Tables are not folded to 80 columns when the output is a pipe or a file."""
    made = Console(stderr=stderr)
    return made if made.is_terminal else Console(stderr=stderr, width=200)
