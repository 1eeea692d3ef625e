"""Logs a job to the MLflow tracking servers its spec names (`integrations`), from the worker:
the spec as params, tags naming the job, each metric point once it is stored, and the trained
model (its safetensors file and card) as an artifact.

Each server is logged to from a thread of its own, fed through a bounded queue: a server that
is slow or down never holds up a heartbeat, and never fails the job. The first request that
fails ends the logging to that server for the attempt, and a job event says so; a request
gives up within seconds (CLIENT_DEFAULTS), not the client's minutes.

A job has one MLflow run: each attempt finds the run its earlier attempts made by the job's
tag (JOB_TAG) and goes on logging to it; the run ends with the job.
"""

import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from app.config import Settings
from app.db import session_scope
from app.models import Job
from app.services import job_state
from app.services.outbound_addresses import ForbiddenAddress, reachable
from trainer.card import ModelCard
from trainer.spec import JobSpec, MlflowIntegration

log = logging.getLogger(__name__)

# The client's own defaults (a 120 s timeout, 7 retries with a backoff of 2) would let a server
# that is down hold up an attempt's end for minutes. The client reads these from the
# environment at each request; an operator's own settings win.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# What the client would send with every request, read from the environment: a job names the
# server, so a worker that holds any of these logs nowhere rather than hand them to it.
CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
JOB_TAG = "tunery.job_id"
# Batches of metric points waiting for a slow server; further batches are dropped (and counted).
QUEUE_BATCHES = 1000
# How long an attempt's end waits for a server to take the rest, the model included; past
# that, the logging goes on in its thread while the worker takes its next job.
FINISH_SECONDS = 60.0
# MLflow's limits on one log_batch request.
METRICS_PER_REQUEST = 1000
PARAMS_PER_REQUEST = 100
# A finished job's status -> its run's.
RUN_STATUS = {
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "cancelled": "KILLED",
    "pruned": "KILLED",
}


class AttemptFacts(Protocol):
    """What of a supervisor's attempt the logging reads."""

    job_id: str
    attempt: int
    spec: JobSpec
    sweep_id: str | None
    settings: Settings


def spec_params(spec: JobSpec) -> dict[str, str]:
    """The spec flattened to MLflow params, keyed by dotted path (`hyperparameters.epochs`);
    the integrations themselves are where the job is logged, not how it is trained."""
    params: dict[str, str] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{path}.{key}" if path else key, inner)
        else:
            params[path] = value if isinstance(value, str) else json.dumps(value)

    walk("", spec.model_dump(mode="json", exclude={"integrations"}))
    return params


def metric_key(split: str, name: str) -> str:
    """`<split>_<name>`, each character MLflow refuses in a name (a regression target's
    column may hold any) replaced by `_`."""
    return re.sub(r"[^\w.\- ]", "_", f"{split}_{name}")


def credentials_in(environ: Mapping[str, str]) -> list[str]:
    """The MLflow credential variables set in `environ`."""
    return [name for name in CREDENTIAL_VARIABLES if environ.get(name)]


def run_tags(facts: AttemptFacts) -> dict[str, str]:
    """What names the job in MLflow: its id, kind, method, architecture and sweep; nothing of
    its tenant."""
    spec = facts.spec
    tags = {
        JOB_TAG: facts.job_id,
        "tunery.kind": spec.kind,
        "tunery.method": spec.method.name,
        "tunery.attempt": str(facts.attempt),
    }
    if spec.model is not None:  # else its base model's, known once the trainer reports it
        tags["tunery.architecture"] = spec.model.architecture
    if facts.sweep_id is not None:
        tags["tunery.sweep_id"] = facts.sweep_id
    return tags


@dataclass(frozen=True)
class _Finish:
    status: str | None  # the run's, once the job is over; None leaves it open for a resume
    card: ModelCard | None
    model_file: Path | None  # a link to the model's file, in a directory the thread removes


@dataclass
class MlflowRun:
    """One attempt's logging to one tracking server, in a thread of its own."""

    integration: MlflowIntegration
    facts: AttemptFacts
    batches: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_BATCHES))
    dropped: int = 0  # metric points dropped while the server was slow
    failed: threading.Event = field(default_factory=threading.Event)
    # Set once the attempt has ended: the thread logs what is queued, then `last`.
    ending: threading.Event = field(default_factory=threading.Event)
    last: _Finish | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, daemon=True, name="mlflow-logging")
        self.thread.start()

    def submit(self, points: list[dict]) -> None:
        """Queue metric points without waiting: a full queue drops them."""
        if self.failed.is_set():
            return
        try:
            self.batches.put_nowait(points)
        except queue.Full:
            self.dropped += len(points)

    def finish(self, last: _Finish) -> None:
        self.last = last
        self.ending.set()

    def _work(self) -> None:
        uri = self.integration.tracking_uri
        if held := credentials_in(os.environ):
            self.failed.set()
            self._warn(
                f"MLflow at {uri} is not logged to: this worker holds MLflow credentials "
                f"({', '.join(held)}), which the client would send to any server a job names"
            )
            return
        try:
            reachable(uri, self.facts.settings.mlflow_allow)  # its name may resolve elsewhere now
            client, run_id = self._open_run()
            while True:
                try:
                    points = self.batches.get(timeout=0.2)
                except queue.Empty:
                    if self.ending.is_set():  # and every point queued before it is logged
                        self._close_run(client, run_id, self.last)
                        return
                    continue
                self._log_metrics(client, run_id, points)
        except Exception as error:  # any failure of the server, the network or the client
            self.failed.set()
            self._warn(
                f"MLflow at {uri} could not be reached or refused the run ({_reason(error)}); "
                "nothing more is logged there by this attempt, and the job goes on without it"
            )
        finally:
            if self.ending.is_set():
                _remove_staging(self.last)

    def _open_run(self) -> tuple[Any, str]:
        """The job's run, found by its tag or made; its params and tags logged."""
        # Imported here, in the thread: the client takes seconds to import, which a worker
        # whose jobs log nowhere never spends.
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        client = MlflowClient(tracking_uri=self.integration.tracking_uri)
        name = self.integration.experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(name)
            except MlflowException as error:  # another job made it meanwhile
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(name).experiment_id
        job_id = self.facts.job_id
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1
        )
        if found:  # an earlier attempt's: this one goes on with it
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_name = self.facts.spec.name or job_id
            run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [
            Param(key, value[:MAX_PARAM_VAL_LENGTH])
            for key, value in spec_params(self.facts.spec).items()
        ]
        tags = [RunTag(key, value) for key, value in run_tags(self.facts).items()]
        for start in range(0, len(params), PARAMS_PER_REQUEST):
            client.log_batch(run_id, params=params[start : start + PARAMS_PER_REQUEST])
        client.log_batch(run_id, tags=tags)
        return client, run_id

    def _log_metrics(self, client: Any, run_id: str, points: list[dict]) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(
                key=metric_key(p["split"], p["name"]),
                value=p["value"],
                timestamp=int(p["time"] * 1000),
                step=p["step"],
            )
            for p in points
        ]
        for start in range(0, len(metrics), METRICS_PER_REQUEST):
            client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_REQUEST])

    def _close_run(self, client: Any, run_id: str, finish: _Finish) -> None:
        if finish.card is not None:
            client.set_tag(run_id, "tunery.architecture", finish.card.architecture)
        if finish.model_file is not None and finish.card is not None:
            _check_artifact_store(client.get_run(run_id).info.artifact_uri)
            client.log_artifact(run_id, str(finish.model_file), "model")
            client.log_text(run_id, finish.card.model_dump_json(indent=2), "model/card.json")
            client.set_tag(run_id, "tunery.model_id", finish.card.model_id)
        if self.dropped:
            self._warn(
                f"MLflow at {self.integration.tracking_uri} was too slow: {self.dropped} metric "
                "points were not logged to it"
            )
        if finish.status is not None:
            client.set_terminated(run_id, finish.status)

    def _warn(self, message: str) -> None:
        """A job event (and a worker log line): the tenant sees why its run is incomplete."""
        job_id, attempt = self.facts.job_id, self.facts.attempt
        log.warning("job %s: %s", job_id, message, extra={"job_id": job_id, "attempt": attempt})
        try:
            with session_scope() as session:
                job_state.add_event(session, job_id, attempt, "log", message)
        except Exception:  # the database is down too: the worker's log keeps it
            log.exception("job %s: could not record an MLflow warning", job_id)


@dataclass
class JobTracking:
    """An attempt's logging to every server its job names; none for most jobs."""

    facts: AttemptFacts | None = None
    runs: list[MlflowRun] = field(default_factory=list)

    def metrics(self, events: list[dict]) -> None:
        """The attempt's events just stored: their metric points go to each server."""
        points = [event for event in events if event["type"] == "metric"]
        if points:
            for run in self.runs:
                run.submit(points)

    def finish(self, card: ModelCard | None, model_file: Path) -> None:
        """The attempt has ended: once the job is over, its model (if this attempt made it) is
        logged and its run ended; a job that will go on keeps its run open. Waits at most
        FINISH_SECONDS for the servers."""
        if not self.runs:
            return
        try:
            status, result_model_id = _job_outcome(self.facts.job_id)
        except Exception:  # the run stays open: a later attempt, or nobody, closes it
            log.exception("job %s: could not read its status for MLflow", self.facts.job_id)
            status, result_model_id = None, None
        made_model = card is not None and result_model_id == card.model_id
        for run in self.runs:
            going = not run.failed.is_set()
            staged = _stage(model_file, self.facts.settings) if made_model and going else None
            run.finish(_Finish(RUN_STATUS.get(status), card, staged))
        deadline = time.monotonic() + FINISH_SECONDS
        for run in self.runs:
            run.thread.join(max(0.0, deadline - time.monotonic()))
            if not run.thread.is_alive():  # else the thread removes it once done with it
                _remove_staging(run.last)


# Where a run's artifacts may go: through the tracking server. A server answering with another
# location (`file:`, `s3://`, ...) would have the worker write there itself, on its own disks
# or with its own credentials.
ARTIFACT_SCHEMES = ("mlflow-artifacts", "http", "https")


class ArtifactsElsewhere(Exception):
    """The server keeps its runs' artifacts where the worker would have to write them itself."""


def _check_artifact_store(artifact_uri: str) -> None:
    scheme = urlsplit(artifact_uri).scheme
    if scheme not in ARTIFACT_SCHEMES:
        raise ArtifactsElsewhere(
            f"its runs keep artifacts at a {scheme or 'local'}: location, which the worker "
            "would write to itself; serve them through the tracking server "
            "(`mlflow server --serve-artifacts`)"
        )


def _reason(error: Exception) -> str:
    """What went wrong, without what the server answered: a job's events are the tenant's,
    and an answer's text is whatever the address it named returned."""
    if isinstance(error, ForbiddenAddress | ArtifactsElsewhere):  # ours: no answer's text
        return str(error)
    status = getattr(error, "get_http_status_code", lambda: None)()
    return type(error).__name__ + (f", HTTP {status}" if status else "")


def start(facts: AttemptFacts) -> JobTracking:
    """Start logging the attempt to each MLflow server its spec names."""
    runs = [
        MlflowRun(integration, facts)
        for integration in facts.spec.integrations
        if integration.type == "mlflow"
    ]
    for run in runs:
        run.start()
    return JobTracking(facts, runs)


def _job_outcome(job_id: str) -> tuple[str, str | None]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job.status, job.result_model_id


def _stage(model_file: Path, settings: Settings) -> Path | None:
    """A link to the model's file, which the supervisor removes with the attempt's directory
    while a slow server may still be reading it; None if it cannot be made."""
    staging = Path(tempfile.mkdtemp(prefix="mlflow-", dir=settings.run_dir))
    staged = staging / model_file.name
    try:
        try:
            os.link(model_file, staged)
        except OSError:  # a file system without hard links
            shutil.copyfile(model_file, staged)
    except OSError:
        log.exception("could not stage %s for MLflow", model_file)
        shutil.rmtree(staging, ignore_errors=True)
        return None
    return staged


def _remove_staging(finish: _Finish) -> None:
    if finish.model_file is not None:
        shutil.rmtree(finish.model_file.parent, ignore_errors=True)
