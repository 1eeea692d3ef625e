"""The operations of `client.jobs`, `client.sweeps`, `client.datasets`, `client.models` and
`client.registered_models` (see `tunery._core` for how one generator serves both clients)."""

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel

from app.schemas import DatasetTask
from tunery._core import (
    TRANSIENT,
    Close,
    Emit,
    Items,
    Op,
    Operations,
    ReadChunk,
    Request,
    Sleep,
    route,
)
from tunery._progress import transfer_bar
from tunery._sse import ServerSentEvent, SSEDecoder
from tunery.errors import APIConnectionError, TuneryError, WaitTimeout
from tunery.types import (
    FINAL_STATUSES,
    SWEEP_FINAL_STATUSES,
    Alias,
    Checkpoint,
    Dataset,
    Event,
    Job,
    MetricPoint,
    Model,
    ModelVersion,
    Page,
    Prediction,
    RegisteredModel,
    RegisteredModelDetail,
    StreamEvent,
    Sweep,
    SweepEvent,
    Trial,
)

X = TypeVar("X")
W = TypeVar("W", Job, Sweep)
Status = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled", "pruned"]
Kind = Literal["pretrain", "finetune", "adapt"]
ModelFormat = Literal["safetensors", "onnx", "archive", "hf"]

PAGE_SIZE = 100
CHUNK = 1 << 20
# The server checks an upload whole before it answers, and pings a quiet stream every 15 s.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=600.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=60.0)
SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx", "archive": ".zip", "hf": ".zip"}
_STREAM_TYPES: dict[str, type[BaseModel]] = {
    "status": Job,
    "end": Job,
    "metric": MetricPoint,
    "log": Event,
}
_SWEEP_STREAM_TYPES: dict[str, type[Sweep] | type[Trial]] = {
    "trial": Trial,
    "status": Sweep,
    "end": Sweep,
}


def _new_key() -> str:
    return f"tunery-sdk-{uuid.uuid4().hex}"


def _body(spec: dict[str, Any] | BaseModel) -> Any:
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json", exclude_unset=True)
    return spec


def _wait(
    get: Callable[[str], Op[W]],
    what: str,
    obj_id: str,
    final: frozenset[str],
    timeout: float | None,
    poll_interval: float,
) -> Op[W]:
    """`get(obj_id)` once its status is in `final`, polling with back-off from `poll_interval`
    up to 3 s; `WaitTimeout` after `timeout` seconds."""
    started, interval = time.monotonic(), poll_interval
    while True:
        obj = yield from get(obj_id)
        if obj.status in final:
            return obj
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise WaitTimeout(obj, timeout, what)  # type: ignore[arg-type]
        yield Sleep(interval if left is None else min(interval, left))
        interval = min(3.0, interval * 1.5)


def _follow(
    ops: Operations,
    path: str,
    what: str,
    last_event_id: str | None,
    pick: Callable[[ServerSentEvent], X | None],
) -> Items[X]:
    """A live stream of Server-Sent Events, through its `end` event: each event is handed to
    `pick`, and what it returns (unless None) to the caller. A broken connection is opened
    again, with `Last-Event-ID` when the server sent ids (the server then resumes after it)."""
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = Request("GET", path, headers=headers, stream=True, timeout=STREAM_TIMEOUT)
        response = yield from ops.send(request)
        decoder = SSEDecoder()
        reason = f"ended before the {what.split()[0]} did"
        try:
            while chunk := (yield ReadChunk(response)):
                for sse in decoder.feed(chunk):
                    failures = 0
                    last_event_id = sse.id or last_event_id
                    item = pick(sse)
                    if item is not None:
                        yield Emit(item)
                    if sse.event == "end":
                        return
        except TRANSIENT as error:
            reason = f"broke: {error}"
        yield Close(response)
        if failures >= ops.policy.max_retries:
            raise APIConnectionError(f"the stream of {what} {reason}")
        retry = decoder.retry  # the server's own advice, in milliseconds
        yield Sleep(ops.policy.backoff_delay(failures) if retry is None else retry / 1000)
        failures += 1


class JobOps(Operations):
    def create(
        self, spec: dict[str, Any] | BaseModel, idempotency_key: str | None = None
    ) -> Op[Job]:
        """Submit a job spec (a dict, or a `PretrainSpec`/`FinetuneSpec`/`AdaptSpec`). It is
        sent with an Idempotency-Key (a new one unless given), so a retry cannot make two jobs."""
        headers = {"Idempotency-Key": idempotency_key or _new_key()}
        request = Request("POST", "/v1/jobs", json=_body(spec), headers=headers)
        return (yield from self.fetch(request, Job))

    def get(self, job_id: str) -> Op[Job]:
        return (yield from self.fetch(Request("GET", route("/v1/jobs", job_id)), Job))

    def cancel(self, job_id: str) -> Op[Job]:
        """Cancel a queued or running job; `Conflict` for a finished one."""
        return (yield from self.fetch(Request("POST", route("/v1/jobs", job_id, "cancel")), Job))

    def pause(self, job_id: str) -> Op[Job]:
        """Pause a queued job, or ask a running one to checkpoint and stop (`pause_requested`
        until it is `paused`); `Conflict` for a finished one."""
        return (yield from self.fetch(Request("POST", route("/v1/jobs", job_id, "pause")), Job))

    def resume(self, job_id: str) -> Op[Job]:
        """Queue a paused job again, to go on from its last checkpoint."""
        return (yield from self.fetch(Request("POST", route("/v1/jobs", job_id, "resume")), Job))

    def checkpoints(self, job_id: str) -> Items[Checkpoint]:
        """The checkpoints the job's retention policy keeps, by step."""
        yield from self.paginate(route("/v1/jobs", job_id, "checkpoints"), Checkpoint, 1000)

    def wait(
        self, job_id: str, timeout: float | None = None, poll_interval: float = 0.5
    ) -> Op[Job]:
        """The job once it has finished (succeeded, failed or cancelled), polling with back-off
        from `poll_interval` up to 3 s; `WaitTimeout` after `timeout` seconds."""
        return (yield from _wait(self.get, "job", job_id, FINAL_STATUSES, timeout, poll_interval))

    def metrics(self, job_id: str, page_size: int = 1000) -> Items[MetricPoint]:
        """The job's metric points, in the order they were written."""
        yield from self.paginate(route("/v1/jobs", job_id, "metrics"), MetricPoint, page_size)

    def events(self, job_id: str, page_size: int = 1000) -> Items[Event]:
        """The job's events (status changes and log lines), in order."""
        yield from self.paginate(route("/v1/jobs", job_id, "events"), Event, page_size)

    def stream(self, job_id: str, last_event_id: str | None = None) -> Items[StreamEvent]:
        """The job's live stream, until its `end` event: `status` (the Job, first and on every
        change of status or progress), `metric`, `log`, then `end` (the final Job). A broken
        connection is resumed after the last event seen, so nothing comes twice."""
        yield from self._stream(job_id, last_event_id, lambda event: event)

    def stream_metrics(self, job_id: str) -> Items[MetricPoint | Job]:
        """Metric points as they are written, and the Job whenever its status or progress
        changes; the last item is the final Job."""
        yield from self._stream(
            job_id, None, lambda event: event.data if event.type != "log" else None
        )

    def _stream(
        self, job_id: str, last_event_id: str | None, pick: Callable[[StreamEvent], X | None]
    ) -> Items[X]:
        def picked(sse: ServerSentEvent) -> X | None:
            event = _stream_event(sse)
            return None if event is None else pick(event)

        # Resumed after the last event seen: the server sends nothing twice.
        path = route("/v1/jobs", job_id, "stream")
        yield from _follow(self, path, f"job {job_id}", last_event_id, picked)

    def list(
        self, status: Status | None = None, kind: Kind | None = None, page_size: int = PAGE_SIZE
    ) -> Items[Job]:
        """Every job, newest first, fetched `page_size` at a time as you iterate."""
        yield from self.paginate("/v1/jobs", Job, page_size, {"status": status, "kind": kind})


def _stream_event(sse: ServerSentEvent) -> StreamEvent | None:
    model = _STREAM_TYPES.get(sse.event)
    if model is None:  # an event type newer than this SDK
        return None
    return StreamEvent(sse.event, model.model_validate_json(sse.data), sse.id or None)


class SweepOps(Operations):
    def create(
        self, spec: dict[str, Any] | BaseModel, idempotency_key: str | None = None
    ) -> Op[Sweep]:
        """Start a sweep (a dict, or a `tunery.types.SweepSpec`). It is sent with an
        Idempotency-Key (a new one unless given), so a retry cannot start two sweeps."""
        headers = {"Idempotency-Key": idempotency_key or _new_key()}
        request = Request("POST", "/v1/sweeps", json=_body(spec), headers=headers)
        return (yield from self.fetch(request, Sweep))

    def get(self, sweep_id: str) -> Op[Sweep]:
        """The sweep: status, trial counts, best trial, and the parameters' importances."""
        return (yield from self.fetch(Request("GET", route("/v1/sweeps", sweep_id)), Sweep))

    def trials(self, sweep_id: str) -> Op[list[Trial]]:
        """The sweep's trials, by number."""
        found: list[Trial] = []
        cursor = None
        while True:
            request = Request(
                "GET", route("/v1/sweeps", sweep_id, "trials"), params={"cursor": cursor}
            )
            page = yield from self.fetch(request, Page[Trial])
            found += page.data
            if not page.next_cursor:
                return found
            cursor = page.next_cursor

    def cancel(self, sweep_id: str) -> Op[Sweep]:
        """Start no more trials and cancel the running ones; `Conflict` for a sweep that is
        over."""
        request = Request("POST", route("/v1/sweeps", sweep_id, "cancel"))
        return (yield from self.fetch(request, Sweep))

    def wait(
        self, sweep_id: str, timeout: float | None = None, poll_interval: float = 1.0
    ) -> Op[Sweep]:
        """The sweep once it is over (succeeded, failed or cancelled), polling with back-off
        from `poll_interval` up to 3 s; `WaitTimeout` after `timeout` seconds."""
        return (
            yield from _wait(
                self.get, "sweep", sweep_id, SWEEP_FINAL_STATUSES, timeout, poll_interval
            )
        )

    def stream(self, sweep_id: str) -> Items[SweepEvent]:
        """The sweep's live stream, until its `end` event: `trial` (a Trial, when it starts,
        after each epoch and when it ends), `status` (the Sweep, first and on every change),
        then `end` (the final Sweep). The server sends no event ids: after a broken connection
        the stream starts again from the present state, and a state already seen (a trial or
        the sweep unchanged) is not handed out twice; changes made while disconnected arrive
        as their latest state only."""
        seen: dict[int | None, Sweep | Trial] = {}  # the last state of each trial, and the sweep

        def pick(sse: ServerSentEvent) -> SweepEvent | None:
            model = _SWEEP_STREAM_TYPES.get(sse.event)
            if model is None:  # an event type newer than this SDK
                return None
            data = model.model_validate_json(sse.data)
            if sse.event != "end":
                key = data.number if isinstance(data, Trial) else None
                if seen.get(key) == data:
                    return None
                seen[key] = data
            return SweepEvent(sse.event, data)  # type: ignore[arg-type]

        path = route("/v1/sweeps", sweep_id, "stream")
        yield from _follow(self, path, f"sweep {sweep_id}", None, pick)

    def list(self, page_size: int = PAGE_SIZE) -> Items[Sweep]:
        """Every sweep, newest first, fetched `page_size` at a time as you iterate."""
        yield from self.paginate("/v1/sweeps", Sweep, page_size)


class DatasetOps(Operations):
    def upload(
        self,
        file: str | os.PathLike[str],
        name: str | None = None,
        task: DatasetTask = "classification",
        label_column: str = "label",
        progress: bool = True,
        idempotency_key: str | None = None,
        time_column: str | None = None,
    ) -> Op[Dataset]:
        """Upload a dataset file (`.npz`, `.csv`, `.parquet`, `.jsonl`, `.zip` of image
        folders), streamed from disk with a progress bar on stderr. `name` defaults to the
        file's stem. Sent with an Idempotency-Key, so a retry cannot store it twice."""
        file = Path(file)
        size = file.stat().st_size
        boundary = uuid.uuid4().hex
        fields = {"name": name or file.stem, "task": task, "label_column": label_column}
        if time_column is not None:  # forecasting: the column of the rows' times
            fields["time_column"] = time_column
        head, tail = _multipart_envelope(boundary, fields, file.name)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
            "Idempotency-Key": idempotency_key or _new_key(),
        }
        with transfer_bar(f"uploading {file.name}", size, progress) as bar:

            def body() -> Iterator[bytes]:
                bar.restart()
                yield head
                with file.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        yield chunk
                        bar.advance(len(chunk))
                yield tail

            request = Request(
                "POST", "/v1/datasets", headers=headers, body=body, timeout=UPLOAD_TIMEOUT
            )
            return (yield from self.fetch(request, Dataset))

    def get(self, dataset_id: str) -> Op[Dataset]:
        return (yield from self.fetch(Request("GET", route("/v1/datasets", dataset_id)), Dataset))

    def list(self, page_size: int = PAGE_SIZE) -> Items[Dataset]:
        """Every dataset, newest first."""
        yield from self.paginate("/v1/datasets", Dataset, page_size)


def _multipart_envelope(
    boundary: str, fields: dict[str, str], filename: str
) -> tuple[bytes, bytes]:
    """What goes before and after the file's bytes in a multipart/form-data body; built by
    hand so that the file streams from disk and Content-Length is still known."""
    quoted = filename.replace("\\", "\\\\").replace('"', "%22")
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in fields.items()
    ]
    parts.append(
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode(), f"\r\n--{boundary}--\r\n".encode()


class ModelOps(Operations):
    def get(self, model_id: str) -> Op[Model]:
        return (yield from self.fetch(Request("GET", route("/v1/models", model_id)), Model))

    def download(
        self,
        model_id: str,
        format: ModelFormat = "safetensors",
        path: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> Op[Path]:
        """Save the model as `format` (see the API's download route) to `path` (a file, or a
        directory for the server's file name; default: that name in the current directory).
        The bytes are checked against the server's sha256 before the file appears."""
        request = Request(
            "GET",
            route("/v1/models", model_id, "download"),
            params={"format": format},
            stream=True,
            timeout=UPLOAD_TIMEOUT,
        )
        response = yield from self.send(request)
        target = _download_target(path, response, model_id, format)
        partial = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        length = response.headers.get("content-length")
        try:
            with (
                transfer_bar(
                    f"downloading {target.name}", int(length) if length else None, progress
                ) as bar,
                partial.open("wb") as out,
            ):
                while chunk := (yield ReadChunk(response)):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.advance(len(chunk))
            expected = response.headers.get("x-content-sha256")
            if expected and expected != digest.hexdigest():
                raise TuneryError(f"{target.name}: the bytes received do not match the sha256 sent")
        except TRANSIENT as error:
            partial.unlink(missing_ok=True)
            raise APIConnectionError(f"the download of {model_id} broke: {error}") from error
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return target

    def predict(
        self, model_id: str, inputs: Any, return_embeddings: bool = False
    ) -> Op[Prediction]:
        """Predict on a batch of raw inputs (nested lists, a numpy array, or strings for text
        models), each of the model's `input_shape`."""
        if hasattr(inputs, "tolist"):  # a numpy array or a tensor
            inputs = inputs.tolist()
        request = Request(
            "POST",
            route("/v1/models", model_id, "predict"),
            json={"inputs": inputs, "return_embeddings": return_embeddings},
            idempotent=True,  # it changes nothing on the server
        )
        return (yield from self.fetch(request, Prediction))

    def list(self, parent_id: str | None = None, page_size: int = PAGE_SIZE) -> Items[Model]:
        """Every model, newest first; with `parent_id`, the models made from that one."""
        yield from self.paginate("/v1/models", Model, page_size, {"parent_id": parent_id})


class RegisteredModelOps(Operations):
    """Registered models: names with numbered versions and movable aliases. A version is also a
    model reference, `name@alias` or `name/versions/N`, wherever `client.models` takes an id."""

    def list(self, page_size: int = PAGE_SIZE) -> Items[RegisteredModel]:
        """Every registered model, newest first, with its latest version and its aliases."""
        yield from self.paginate("/v1/registered-models", RegisteredModel, page_size)

    def get(self, name: str) -> Op[RegisteredModelDetail]:
        """Its versions, aliases and every move of an alias."""
        request = Request("GET", route("/v1/registered-models", name))
        return (yield from self.fetch(request, RegisteredModelDetail))

    def register(self, name: str, model_id: str) -> Op[ModelVersion]:
        """Make a model the name's next version (the first makes the name); `Conflict` if it
        is a version of that name already."""
        path = route("/v1/registered-models", name, "versions")
        return (
            yield from self.fetch(Request("POST", path, json={"model_id": model_id}), ModelVersion)
        )

    def set_alias(self, name: str, alias: str, version: int) -> Op[Alias]:
        """Point `alias` (made if new) at a version."""
        path = route("/v1/registered-models", name, "aliases", alias)
        return (yield from self.fetch(Request("PUT", path, json={"version": version}), Alias))

    def delete_alias(self, name: str, alias: str) -> Op[None]:
        """Delete the alias (kept in the history as a move to nothing)."""
        yield from self.send(
            Request("DELETE", route("/v1/registered-models", name, "aliases", alias))
        )


def _download_target(
    where: str | os.PathLike[str] | None, response: httpx.Response, model_id: str, format: str
) -> Path:
    disposition = Message()
    disposition["content-disposition"] = response.headers.get("content-disposition", "")
    sent = disposition.get_filename()
    name = Path(sent).name if sent else f"{model_id}{SUFFIXES.get(format, '')}"
    if where is None:
        return Path(name)
    where = Path(where)
    return where / name if where.is_dir() else where
