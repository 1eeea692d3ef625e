"""The `tunery` command: jobs, sweeps, datasets, models and registered models through the API
(`TUNERY_URL`,
`TUNERY_API_KEY`), and `tunery admin` for tenants and keys, on the server's database.

`--json` prints one JSON document on stdout and nothing else there; progress bars and errors
go to stderr. Exit codes: 0 success; 1 the API refused (its problem on stderr) or could not
be reached; 2 bad usage; 3 the watched job or sweep failed; 4 it was cancelled (a job: or
pruned); 130 interrupted.
"""

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic_core import to_jsonable_python
from rich.console import RenderableType
from rich.live import Live
from rich.markup import escape

from app.cli import admin
from tunery import _compare, _render
from tunery._operations import DatasetTask, Kind, ModelFormat, Status
from tunery.client import Client
from tunery.errors import APIError, TuneryError
from tunery.types import Job, Sweep, Trial

EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED, EXIT_INTERRUPTED = 1, 3, 4, 130
EXIT_BY_STATUS = {
    "succeeded": 0,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "pruned": EXIT_CANCELLED,  # a sweep's trial its pruner stopped, as a cancel does
}

app = typer.Typer(
    no_args_is_help=True,
    help="tunery: train PyTorch models over HTTP.",
    pretty_exceptions_enable=False,
)
jobs = typer.Typer(no_args_is_help=True, help="Submit, follow and cancel training jobs.")
sweeps = typer.Typer(
    no_args_is_help=True, help="Hyperparameter sweeps: trials run as jobs, the best is kept."
)
datasets = typer.Typer(no_args_is_help=True, help="Upload and list datasets.")
models = typer.Typer(
    no_args_is_help=True,
    help="List, download and call trained models (by id, NAME@ALIAS or NAME/versions/N).",
)
registry = typer.Typer(
    no_args_is_help=True, help="Registered models: names, numbered versions, moving aliases."
)
app.add_typer(jobs, name="jobs")
app.add_typer(sweeps, name="sweeps")
app.add_typer(datasets, name="datasets")
app.add_typer(models, name="models")
app.add_typer(registry, name="registry")
app.add_typer(admin, name="admin")

Json = Annotated[bool, typer.Option("--json", help="Print JSON only (one document).")]
Limit = Annotated[int, typer.Option(min=1, help="Show at most this many, newest first.")]


@dataclass(frozen=True)
class Settings:
    url: str | None
    api_key: str | None


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="TUNERY_URL", help="The API (default http://127.0.0.1:8000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TUNERY_API_KEY", help="Your API key.", show_default=False)
    ] = None,
) -> None:
    ctx.obj = Settings(url, api_key)


def _client(ctx: typer.Context) -> Client:
    return ctx.with_resource(Client(ctx.obj.url, ctx.obj.api_key))


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable_python(data), indent=2) + "\n")


def _show(as_json: bool, data: Any, human: Callable[[], RenderableType]) -> None:
    """`data` as JSON, or what `human` makes as text."""
    if as_json:
        _print_json(data)
    else:
        _render.console().print(human())


# Jobs


def _load_spec(
    file: Path, assignments: list[str], fields: str = "kind, model, data"
) -> dict[str, Any]:
    try:
        text = file.read_text()
        spec = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise typer.BadParameter(str(error), param_hint="SPEC") from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"a spec is a mapping ({fields}, ...)", param_hint="SPEC")
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not (equals and key):
            raise typer.BadParameter(f"{assignment!r} is not KEY=VALUE", param_hint="--set")
        *parents, last = key.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise typer.BadParameter(f"{key}: {part} is not a mapping", param_hint="--set")
        node[last] = yaml.safe_load(value)
    return spec


def _watch(client: Client, job: Job, as_json: bool) -> NoReturn:
    """Follow the job to its end, then exit with its outcome's code."""
    out = _render.console(stderr=as_json)
    monitor = _render.JobMonitor(job)
    # On a terminal the bar and table redraw in place; in a log, events are lines.
    live = Live(monitor, console=out, transient=True, refresh_per_second=4)
    try:
        with live if out.is_terminal else nullcontext():
            for event in client.jobs.stream(job.id):
                if event.type == "metric":
                    monitor.add(event.data)
                elif event.type == "log":
                    out.print(_render.event_line(event.data))
                else:
                    monitor.update(event.data)
    except KeyboardInterrupt:
        out.print(f"stopped watching; {job.id} goes on (tunery jobs cancel {job.id} stops it)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    out.print(monitor.metrics_table())
    out.print(monitor.summary())
    if as_json:
        _print_json(monitor.job)
    raise typer.Exit(EXIT_BY_STATUS[monitor.job.status])


@jobs.command("submit")
def jobs_submit(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="A job spec, YAML or JSON.", exists=True, dir_okay=False)
    ],
    watch: Annotated[bool, typer.Option(help="Follow it live until it ends.")] = False,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a field, e.g. --set base_model_id=model_... "
            "--set hyperparameters.epochs=3 (the value is read as YAML).",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Submit a job. With --watch, exit 0 only if it succeeds (3: failed, 4: cancelled)."""
    client = _client(ctx)
    job = client.jobs.create(_load_spec(spec, assignments or []))
    if watch:
        _watch(client, job, as_json)
    _show(as_json, job, lambda: f"submitted {job.id} ({job.status})")


@jobs.command("watch")
def jobs_watch(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """Follow a job live until it ends; the exit code says how (as `submit --watch`)."""
    client = _client(ctx)
    _watch(client, client.jobs.get(job_id), as_json)


@jobs.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option(help="Only jobs in this state.")] = None,
    kind: Annotated[Kind | None, typer.Option(help="Only jobs of this kind.")] = None,
    limit: Limit = 20,
    as_json: Json = False,
) -> None:
    """Your jobs, newest first."""
    found = list(islice(_client(ctx).jobs.list(status, kind, page_size=min(limit, 100)), limit))
    _show(as_json, found, lambda: _render.jobs_table(found))


@jobs.command("show")
def jobs_show(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """A job: status, progress, metrics, error, model (--json: with its whole spec)."""
    job = _client(ctx).jobs.get(job_id)
    _show(as_json, job, lambda: _render.job_details(job))


COMPARED = range(2, 11)  # enough jobs to compare, few enough for their columns to be read


@jobs.command("compare")
def jobs_compare(
    ctx: typer.Context,
    job_ids: Annotated[
        list[str], typer.Argument(metavar="ID", help="2 to 10 job ids.", show_default=False)
    ],
    as_json: Json = False,
) -> None:
    """Jobs side by side: their final metrics (the best in bold), and the spec fields they
    set differently."""
    if len(job_ids) not in COMPARED:
        raise typer.BadParameter(f"give 2 to 10 job ids, not {len(job_ids)}", param_hint="ID")
    client = _client(ctx)
    found = [client.jobs.get(job_id) for job_id in job_ids]
    _show(as_json, _compare.comparison(found), lambda: _render.comparison(found))


@jobs.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """Cancel a queued or running job."""
    job = _client(ctx).jobs.cancel(job_id)
    _show(as_json, job, lambda: f"{job.id} {job.status}")


@jobs.command("pause")
def jobs_pause(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """Pause a queued job, or have a running one checkpoint and stop; `resume` goes on."""
    job = _client(ctx).jobs.pause(job_id)
    asked = " (pausing at its next checkpoint)" if job.pause_requested else ""
    _show(as_json, job, lambda: f"{job.id} {job.status}{asked}")


@jobs.command("resume")
def jobs_resume(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """Queue a paused job again, to go on from its last checkpoint."""
    job = _client(ctx).jobs.resume(job_id)
    _show(as_json, job, lambda: f"{job.id} {job.status}")


@jobs.command("checkpoints")
def jobs_checkpoints(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """The checkpoints a job's retention policy keeps: a new job may start from one
    (`base_checkpoint_id` in its spec)."""
    found = list(_client(ctx).jobs.checkpoints(job_id))
    _show(as_json, found, lambda: _render.checkpoints_table(found))


@jobs.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
    as_json: Json = False,
) -> None:
    """A job's events: status changes and log lines."""
    client = _client(ctx)
    events: Iterable[Any] = (
        (e.data for e in client.jobs.stream(job_id) if e.type == "log")
        if follow
        else client.jobs.events(job_id)
    )
    if as_json:
        _print_json(list(events))
        return
    out = _render.console()
    for event in events:
        out.print(_render.event_line(event))


# Sweeps

Assignments = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a field, e.g. --set max_trials=4 --set job.hyperparameters.epochs=3 "
        "(the value is read as YAML).",
    ),
]


def _watch_sweep(client: Client, sweep: Sweep, as_json: bool) -> NoReturn:
    """Follow the sweep to its end, then exit with its outcome's code."""
    out = _render.console(stderr=as_json)
    monitor = _render.SweepMonitor(sweep)
    # On a terminal the table redraws in place; in a log, each trial's changes are lines.
    live = Live(monitor, console=out, transient=True, refresh_per_second=4)
    try:
        with live if out.is_terminal else nullcontext():
            for event in client.sweeps.stream(sweep.id):
                if isinstance(event.data, Trial):
                    if monitor.add(event.data) and not out.is_terminal:
                        out.print(_render.trial_line(event.data))
                else:
                    monitor.update(event.data)
        final = client.sweeps.get(sweep.id)  # with the parameters' importances
    except KeyboardInterrupt:
        out.print(
            f"stopped watching; {sweep.id} goes on (tunery sweeps cancel {sweep.id} stops it)"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    monitor.update(final)
    out.print(monitor.trials_table())
    if final.importances:
        out.print(f"importances: {_render.importances(final.importances)}")
    out.print(monitor.summary())
    if as_json:
        _print_json(final)
    raise typer.Exit(EXIT_BY_STATUS[final.status])


@sweeps.command("create")
def sweeps_create(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="A sweep spec, YAML or JSON.", exists=True, dir_okay=False)
    ],
    watch: Annotated[bool, typer.Option(help="Follow it live until it ends.")] = False,
    assignments: Assignments = None,
    as_json: Json = False,
) -> None:
    """Start a sweep. With --watch, exit 0 only if it succeeds (3: failed, 4: cancelled)."""
    client = _client(ctx)
    body = _load_spec(spec, assignments or [], fields="job, parameters, objective")
    sweep = client.sweeps.create(body)
    if watch:
        _watch_sweep(client, sweep, as_json)
    _show(as_json, sweep, lambda: f"created {sweep.id} ({sweep.status})")


@sweeps.command("watch")
def sweeps_watch(ctx: typer.Context, sweep_id: str, as_json: Json = False) -> None:
    """Follow a sweep live until it ends; the exit code says how (as `create --watch`)."""
    client = _client(ctx)
    _watch_sweep(client, client.sweeps.get(sweep_id), as_json)


@sweeps.command("list")
def sweeps_list(ctx: typer.Context, limit: Limit = 20, as_json: Json = False) -> None:
    """Your sweeps, newest first."""
    found = list(islice(_client(ctx).sweeps.list(page_size=min(limit, 100)), limit))
    _show(as_json, found, lambda: _render.sweeps_table(found))


@sweeps.command("show")
def sweeps_show(ctx: typer.Context, sweep_id: str, as_json: Json = False) -> None:
    """A sweep: status, trial counts, the best trial, importances (--json: with its spec)."""
    sweep = _client(ctx).sweeps.get(sweep_id)
    _show(as_json, sweep, lambda: _render.sweep_details(sweep))


sweeps.command("get", help="The same as `show`.")(sweeps_show)


@sweeps.command("trials")
def sweeps_trials(ctx: typer.Context, sweep_id: str, as_json: Json = False) -> None:
    """A sweep's trials: number, job, state, parameters, epochs reported, objective."""
    client = _client(ctx)
    if as_json:
        _print_json(client.sweeps.trials(sweep_id))
        return
    sweep = client.sweeps.get(sweep_id)  # its parameters and best trial
    _render.console().print(_render.trials_table(sweep, client.sweeps.trials(sweep_id)))


@sweeps.command("cancel")
def sweeps_cancel(ctx: typer.Context, sweep_id: str, as_json: Json = False) -> None:
    """Start no more trials and cancel the running ones."""
    sweep = _client(ctx).sweeps.cancel(sweep_id)
    _show(as_json, sweep, lambda: f"{sweep.id} {sweep.status}")


# Datasets


@datasets.command("upload")
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file.")],
    name: Annotated[str | None, typer.Option(help="Default: the file's name.")] = None,
    task: Annotated[DatasetTask, typer.Option()] = "classification",
    label_column: Annotated[str, typer.Option(help="csv/parquet: the label's column.")] = "label",
    as_json: Json = False,
) -> None:
    """Upload a dataset: .npz, .csv, .parquet, .jsonl or a .zip of image folders."""
    progress = _render.console(stderr=True).is_terminal
    dataset = _client(ctx).datasets.upload(path, name, task, label_column, progress=progress)
    _show(as_json, dataset, lambda: _render.datasets_table([dataset]))


@datasets.command("list")
def datasets_list(ctx: typer.Context, limit: Limit = 20, as_json: Json = False) -> None:
    """Your datasets, newest first."""
    found = list(islice(_client(ctx).datasets.list(page_size=min(limit, 100)), limit))
    _show(as_json, found, lambda: _render.datasets_table(found))


# Models


@models.command("list")
def models_list(
    ctx: typer.Context,
    parent: Annotated[str | None, typer.Option(help="Only models made from this one.")] = None,
    limit: Limit = 20,
    as_json: Json = False,
) -> None:
    """Your models, newest first."""
    found = list(islice(_client(ctx).models.list(parent, page_size=min(limit, 100)), limit))
    _show(as_json, found, lambda: _render.models_table(found))


@models.command("download")
def models_download(
    ctx: typer.Context,
    model_id: str,
    format: Annotated[ModelFormat, typer.Option(help="archive: ONNX + serve.py.")] = "safetensors",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file or a directory.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Download a model's weights (safetensors, its card inside), ONNX, or an archive."""
    progress = _render.console(stderr=True).is_terminal
    saved = _client(ctx).models.download(model_id, format, output, progress=progress)
    summary = {"path": str(saved), "format": format, "size_bytes": saved.stat().st_size}
    _show(as_json, summary, lambda: f"saved {escape(str(saved))} ({summary['size_bytes']} bytes)")


def _inputs(value: str) -> Any:
    """A JSON file, an .npy file, or JSON itself: a batch, or `{"inputs": batch}`."""
    file = Path(value)
    try:
        if file.suffix == ".npy" and file.is_file():
            import numpy as np  # only for this; the rest of the command runs without it

            return np.load(file, allow_pickle=False)
        parsed = json.loads(file.read_text() if file.is_file() else value)
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="--input") from None
    return parsed["inputs"] if isinstance(parsed, dict) and "inputs" in parsed else parsed


@models.command("predict")
def models_predict(
    ctx: typer.Context,
    model_id: str,
    input: Annotated[
        str,
        typer.Option(
            "--input", "-i", help='JSON (a batch, or {"inputs": batch}), a .json or .npy file.'
        ),
    ],
    embeddings: Annotated[bool, typer.Option(help="Return the embeddings too.")] = False,
    as_json: Json = False,
) -> None:
    """Predict on a batch of raw inputs."""
    answer = _client(ctx).models.predict(model_id, _inputs(input), return_embeddings=embeddings)
    _show(as_json, answer, lambda: _render.predictions_table(answer))


# Registered models


@registry.command("list")
def registry_list(ctx: typer.Context, limit: Limit = 20, as_json: Json = False) -> None:
    """Your registered models, newest first: the latest version and the aliases of each."""
    found = list(islice(_client(ctx).registered_models.list(page_size=min(limit, 100)), limit))
    _show(as_json, found, lambda: _render.registered_models_table(found))


@registry.command("show")
def registry_show(ctx: typer.Context, name: str, as_json: Json = False) -> None:
    """A registered model's versions, aliases and every move of an alias."""
    found = _client(ctx).registered_models.get(name)
    _show(as_json, found, lambda: _render.registered_model_details(found))


@registry.command("register")
def registry_register(ctx: typer.Context, name: str, model_id: str, as_json: Json = False) -> None:
    """Make a model NAME's next version (the first makes NAME)."""
    version = _client(ctx).registered_models.register(name, model_id)
    _show(
        as_json, version, lambda: f"{escape(name)}/versions/{version.version}: {version.model_id}"
    )


@registry.command("alias")
def registry_alias(
    ctx: typer.Context,
    name: str,
    alias: str,
    version: Annotated[int, typer.Argument(min=1)],
    as_json: Json = False,
) -> None:
    """Point ALIAS of NAME at VERSION (made if new, moved if not)."""
    moved = _client(ctx).registered_models.set_alias(name, alias, version)
    _show(
        as_json,
        moved,
        lambda: f"{escape(name)}@{escape(alias)} → version {moved.version}: {moved.model_id}",
    )


@registry.command("unalias")
def registry_unalias(ctx: typer.Context, name: str, alias: str, as_json: Json = False) -> None:
    """Delete ALIAS of NAME."""
    _client(ctx).registered_models.delete_alias(name, alias)
    _show(
        as_json,
        {"name": name, "alias": alias, "deleted": True},
        lambda: f"deleted {escape(name)}@{escape(alias)}",
    )


# Errors


def _problem_lines(error: TuneryError) -> Iterator[str]:
    if not isinstance(error, APIError):
        yield f"error: {error}"
        return
    yield f"error: {error.status} {error.title}"
    if error.errors:
        for field in error.errors:
            yield f"  {field.get('field')}: {field.get('message')}"
    elif error.detail:
        yield f"  {error.detail}"
    if error.status == 401:
        yield "  (the key is read from --api-key or TUNERY_API_KEY)"


def main() -> None:
    try:
        app()
    except TuneryError as error:
        for line in _problem_lines(error):
            print(line, file=sys.stderr)
        sys.exit(EXIT_ERROR)
