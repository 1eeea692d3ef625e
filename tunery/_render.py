"""How the `tunery` command shows jobs, sweeps, datasets, models, and a job's or a sweep's
live progress."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

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

from trainer.spec import lower_is_better
from tunery import _compare
from tunery.types import (
    Checkpoint,
    Dataset,
    Event,
    Job,
    MetricPoint,
    Model,
    Prediction,
    RegisteredModel,
    RegisteredModelDetail,
    Sweep,
    Trial,
)

SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "paused": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "pruned": "magenta",
    "completed": "green",  # a sweep's trial
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
    "test_mase",  # a forecaster's, before its r2
    "validation_mase",
    "test_r2",
    "validation_r2",
    "test_micro_f1",
    "validation_micro_f1",
    "test_entity_f1",
    "validation_entity_f1",
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


def checkpoints_table(checkpoints: Iterable[Checkpoint]) -> Table:
    table = Table("id", "step", "epoch", "metrics", "size", "created", box=None)
    for checkpoint in checkpoints:
        figures = ", ".join(f"{name} {value:.4g}" for name, value in checkpoint.metrics.items())
        size = f"{checkpoint.size_bytes / 2**20:.1f} MiB"
        table.add_row(
            checkpoint.id,
            str(checkpoint.step),
            str(checkpoint.epoch),
            escape(figures),
            size,
            _time(checkpoint.created_at),
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


def _job_columns(table: Table, jobs: Iterable[Job]) -> None:
    for job in jobs:
        # folded rather than cut short, so that ten ids stay whole in a narrow terminal
        table.add_column(f"{job.id}\n{escape(job.name or '')}", overflow="fold")


def _best_value(values: list[float | None], lower: bool) -> float | None:
    """The best of the values the jobs have; None where there is nothing to choose between."""
    present = [value for value in values if value is not None]
    if len(set(present)) < 2:
        return None
    return min(present) if lower else max(present)


def _metric_cell(value: float | None, best: float | None) -> str:
    if value is None:
        return ""
    return f"[bold]{value:.4g}[/]" if value == best else f"{value:.4g}"


def metrics_comparison(jobs: list[Job]) -> Table:
    """A row per metric, a column per job; the best value in a row in bold."""
    table = Table("metric", box=None)
    _job_columns(table, jobs)
    for name, values in _compare.metrics(jobs).items():
        best = _best_value(values, lower_is_better(name))
        table.add_row(name, *(_metric_cell(value, best) for value in values))
    return table


def spec_differences(jobs: list[Job]) -> RenderableType:
    """A row per spec field the jobs set differently, a column per job."""
    rows = _compare.differences([job.spec for job in jobs])
    if not rows:
        return "The specs are identical."
    table = Table("spec", box=None)
    _job_columns(table, jobs)
    for path, values in rows.items():
        table.add_row(escape(path), *("—" if value is None else _number(value) for value in values))
    return table


def comparison(jobs: list[Job]) -> Group:
    """`tunery jobs compare`: the metrics, then what the specs set differently."""
    return Group(metrics_comparison(jobs), "", spec_differences(jobs))


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


def _aliases(model: RegisteredModel) -> str:
    return ", ".join(f"{a.alias} → {a.version}" for a in model.aliases)


def registered_models_table(models: Iterable[RegisteredModel]) -> Table:
    table = Table("name", "latest version", "aliases", "created", box=None)
    for m in models:
        table.add_row(
            escape(m.name), str(m.latest_version), escape(_aliases(m)), _time(m.created_at)
        )
    return table


def registered_model_details(model: RegisteredModelDetail) -> Group:
    """Its versions (each with its model, who registered it and its aliases), then every move
    of an alias, oldest first."""
    versions = Table("version", "model", "registered by", "aliases", "created", box=None)
    for v in model.versions:
        model_id = f"{v.model_id} (deleted)" if v.deleted else v.model_id
        by = (
            f"job {v.registered_by_job_id}"
            if v.registered_by_job_id
            else (v.registered_by_key_id or "")
        )
        versions.add_row(
            str(v.version), model_id, by, escape(", ".join(v.aliases)), _time(v.created_at)
        )
    moves = Table("alias", "from", "to", "key", "time", box=None)
    for m in model.alias_history:
        moves.add_row(
            escape(m.alias),
            "" if m.from_version is None else str(m.from_version),
            "(deleted)" if m.to_version is None else str(m.to_version),
            m.key_id,
            _time(m.time),
        )
    return Group(
        f"[bold]{escape(model.name)}[/bold]", versions, "", "[bold]alias history[/bold]", moves
    )


def predictions_table(prediction: Prediction) -> Table:
    """A classifier's label and its probability per input, a multilabel model's labels, a
    regressor's value of each target, or a forecaster's of each series at each step ahead."""
    if prediction.forecasts is not None:
        table = Table("#", "step", *(escape(t) for t in prediction.targets), box=None)
        for i, forecast in enumerate(prediction.forecasts):
            steps = zip(*(forecast[t] for t in prediction.targets), strict=True)
            for step, row in enumerate(steps, start=1):
                table.add_row(str(i), str(step), *(f"{v:.6g}" for v in row))
        return table
    if prediction.values is not None:
        table = Table("#", *(escape(t) for t in prediction.targets or ()), box=None)
        for i, row in enumerate(prediction.values):
            table.add_row(str(i), *(f"{v:.6g}" for v in row))
        return table
    if prediction.tags is not None:
        table = Table("#", "tagged", box=None)
        for i, (words, tags) in enumerate(zip(prediction.words, prediction.tags, strict=True)):
            shown = " ".join(
                w if t == "O" else f"{w}/{t}" for w, t in zip(words, tags, strict=True)
            )
            table.add_row(str(i), escape(shown))
        return table
    if prediction.label_sets is not None:
        table = Table("#", "labels", box=None)
        for i, labels in enumerate(prediction.label_sets):
            table.add_row(str(i), escape(", ".join(labels)) or "(none)")
        return table
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


# Sweeps


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _parameters(sweep: Sweep) -> list[str]:
    return list(sweep.spec.get("parameters", {}))


def _short_names(paths: Iterable[str]) -> dict[str, str]:
    """Each parameter's last name (`learning_rate` for `hyperparameters.learning_rate`), or
    its whole path where two would share one."""
    paths = list(paths)
    last = [path.rsplit(".", 1)[-1] for path in paths]
    return {p: n if last.count(n) == 1 else p for p, n in zip(paths, last, strict=True)}


def _params(params: Mapping[str, Any]) -> str:
    names = _short_names(params)
    return "  ".join(f"{names[path]} {_number(value)}" for path, value in params.items())


def objective(sweep: Sweep, direction: bool = True) -> str:
    """`validation accuracy (maximize)`: what the trials are compared on."""
    goal = sweep.spec.get("objective") or {}
    text = f"{goal.get('split', 'validation')} {goal.get('metric', 'accuracy')}"
    return f"{text} ({goal['direction']})" if direction and goal.get("direction") else text


def _counts(sweep: Sweep) -> str:
    counts = sweep.trials.model_dump()
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none yet"


def _best(sweep: Sweep) -> str:
    if (best := sweep.best_trial) is None:
        return ""
    return f"trial {best.number}: {best.value:.4g}  ({_params(best.params)})"


def _test_headline(metrics: dict[str, float]) -> str:
    return _headline({f"test_{name}": value for name, value in metrics.items()}).replace("_", " ")


def importances(values: dict[str, float]) -> str:
    """`learning_rate 0.81  hidden 0.12  batch_size 0.07`, the most important first."""
    names = _short_names(values)
    ranked = sorted(values.items(), key=lambda item: -item[1])
    return "  ".join(f"{names[path]} {value:.2f}" for path, value in ranked)


def sweeps_table(sweeps: Iterable[Sweep]) -> Table:
    table = Table("id", "name", "status", "created", "trials", "best", box=None)
    for sweep in sweeps:
        best = sweep.best_trial
        table.add_row(
            sweep.id,
            escape(sweep.name or ""),
            _status(sweep.status),
            _time(sweep.created_at),
            _counts(sweep),
            "" if best is None else f"{best.value:.4g} (trial {best.number})",
        )
    return table


def sweep_details(sweep: Sweep) -> Table:
    table = Table(show_header=False, box=None)
    rows = [
        ("id", sweep.id),
        ("name", escape(sweep.name or "")),
        ("status", _status(sweep.status)),
        ("created", _time(sweep.created_at)),
        ("finished", _time(sweep.finished_at)),
        ("objective", objective(sweep)),
        ("trials", f"{_counts(sweep)} (of {sweep.spec.get('max_trials', '?')})"),
        ("best", _best(sweep)),
    ]
    if best := sweep.best_trial:
        rows += [("best model", best.model_id or ""), ("best test", _metrics(best.test_metrics))]
    if sweep.importances:
        rows.append(("importances", importances(sweep.importances)))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", value)
    return table


def trials_table(sweep: Sweep, trials: Iterable[Trial], jobs: bool = True) -> Table:
    """A row per trial: its number, state, each parameter's value, the epochs it reported
    and its objective; the best trial in bold."""
    paths = _parameters(sweep)
    names = _short_names(paths)
    columns = ["#", *(["job"] if jobs else []), "state", *names.values(), "epochs", "value"]
    table = Table(*columns, box=None, title=objective(sweep))
    best = sweep.best_trial.number if sweep.best_trial else None
    for trial in sorted(trials, key=lambda t: t.number):
        cells = [
            str(trial.number),
            *([trial.job_id or ""] if jobs else []),
            _status(trial.state),
            *(_number(trial.params[p]) if p in trial.params else "" for p in paths),
            str(max(trial.intermediate_values, default="")),
            "" if trial.value is None else f"{trial.value:.4g}",
        ]
        table.add_row(*cells, style="bold" if trial.number == best else None)
    return table


def trial_line(trial: Trial) -> str:
    """A trial's state and parameters, and its objective once it has one."""
    line = f"trial {trial.number} {_status(trial.state)}  {_params(trial.params)}"
    return line if trial.value is None else f"{line}  value {trial.value:.4g}"


class SweepMonitor:
    """A sweep as its stream tells it: its status and trial counts, a table of its trials,
    and the best trial so far."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.trials: dict[int, Trial] = {}

    def update(self, sweep: Sweep) -> None:
        self.sweep = sweep

    def add(self, trial: Trial) -> bool:
        """Record a trial's state; True when it is new, or its state or parameters changed
        (not after each epoch)."""
        before = self.trials.get(trial.number)
        self.trials[trial.number] = trial
        return before is None or (before.state, before.params) != (trial.state, trial.params)

    def trials_table(self) -> Table:
        return trials_table(self.sweep, self.trials.values(), jobs=False)

    def __rich__(self) -> RenderableType:
        sweep = self.sweep
        head = f"{sweep.id} {_status(sweep.status)}: {_counts(sweep)}"
        return Group(head, self.trials_table(), f"best: {_best(sweep) or 'none yet'}")

    def summary(self) -> str:
        """`sweep_… succeeded: best trial 3, validation accuracy 0.97, test accuracy 0.95,
        model model_…`."""
        sweep, best = self.sweep, self.sweep.best_trial
        line = f"{sweep.id} {_status(sweep.status)}"
        if best is not None:
            line += f": best trial {best.number}, {objective(sweep, False)} {best.value:.4g}"
            if test := _test_headline(best.test_metrics):
                line += f", {test}"
            if best.model_id:
                line += f", model {best.model_id}"
        return line


def console(stderr: bool = False) -> Console:
    """Tables are not folded to 80 columns when the output is a pipe or a file."""
    made = Console(stderr=stderr)
    return made if made.is_terminal else Console(stderr=stderr, width=200)
