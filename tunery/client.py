"""`Client` and `AsyncClient`: the same operations (`tunery._operations`), performed over
httpx.Client or httpx.AsyncClient. Each method below is one line binding an operation."""

import asyncio
import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from importlib.metadata import version
from typing import Any, Concatenate, ParamSpec, TypeVar, get_args, get_origin

import httpx

from tunery._core import (
    Close,
    Emit,
    Items,
    Op,
    ReadAll,
    ReadChunk,
    RetryPolicy,
    Send,
    Sleep,
    Trampoline,
    done,
)
from tunery._operations import DatasetOps, JobOps, ModelOps, RegisteredModelOps, SweepOps

P = ParamSpec("P")
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 (an item's type)

DEFAULT_URL = "http://127.0.0.1:8000"


def _http_options(base_url: str | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    url = base_url or os.environ.get("TUNERY_URL") or DEFAULT_URL
    key = api_key or os.environ.get("TUNERY_API_KEY")
    headers = {"User-Agent": f"tunery-python/{version('tunery')}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


class _SyncDriver:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def call(self, op: Op[T]) -> T:
        trampoline = Trampoline(op)
        for _ in self._run(trampoline):
            pass
        return trampoline.result

    def iterate(self, op: Items[I]) -> Iterator[I]:
        yield from self._run(Trampoline(op))

    def _run(self, trampoline: Trampoline) -> Iterator[Any]:
        chunks: dict[httpx.Response, Iterator[bytes]] = {}
        with ExitStack() as opened:
            opened.callback(trampoline.close)
            while not done(step := trampoline.next()):
                if isinstance(step, Emit):
                    yield step.item
                    continue
                try:
                    trampoline.resolve(self._perform(step, opened, chunks))
                except Exception as error:
                    trampoline.fail(error)

    def _perform(self, effect: Any, opened: ExitStack, chunks: dict) -> Any:
        match effect:
            case Send(request):
                content = request.body() if request.body else None
                response = self.http.send(
                    request.to_httpx(self.http, content), stream=request.stream
                )
                if request.stream:
                    opened.callback(response.close)
                return response
            case Sleep(seconds):
                time.sleep(seconds)
            case ReadChunk(response):
                return next(chunks.setdefault(response, response.iter_bytes()), b"")
            case ReadAll(response):
                response.read()
            case Close(response):
                response.close()


class _AsyncDriver:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, op: Op[T]) -> T:
        trampoline = Trampoline(op)
        async for _ in self._run(trampoline):
            pass
        return trampoline.result

    def iterate(self, op: Items[I]) -> AsyncIterator[I]:
        return self._run(Trampoline(op))

    async def _run(self, trampoline: Trampoline) -> AsyncIterator[Any]:
        chunks: dict[httpx.Response, AsyncIterator[bytes]] = {}
        async with AsyncExitStack() as opened:
            opened.callback(trampoline.close)
            while not done(step := trampoline.next()):
                if isinstance(step, Emit):
                    yield step.item
                    continue
                try:
                    trampoline.resolve(await self._perform(step, opened, chunks))
                except Exception as error:
                    trampoline.fail(error)

    async def _perform(self, effect: Any, opened: AsyncExitStack, chunks: dict) -> Any:
        match effect:
            case Send(request):
                content = _in_thread(request.body()) if request.body else None
                httpx_request = request.to_httpx(self.http, content)
                response = await self.http.send(httpx_request, stream=request.stream)
                if request.stream:
                    opened.push_async_callback(response.aclose)
                return response
            case Sleep(seconds):
                await asyncio.sleep(seconds)
            case ReadChunk(response):
                return await anext(chunks.setdefault(response, response.aiter_bytes()), b"")
            case ReadAll(response):
                await response.aread()
            case Close(response):
                await response.aclose()


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """An upload body read from disk off the event loop."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


# Binding an operation as a method: the driver makes it a value, a coroutine or an iterator.
def _bind(op: Callable[..., Any], run: str, result: Callable[[Any], Any]) -> Any:
    @functools.wraps(op)
    def method(self: "_Resource", *args: Any, **kwargs: Any) -> Any:
        return getattr(self._driver, run)(op(self._ops, *args, **kwargs))

    # help() and IDEs show what the method gives (a Job), not the operation's generator.
    signature = inspect.signature(op)
    yields, _sent, returns = get_args(signature.return_annotation)
    if run == "iterate":
        returns = next(get_args(t)[0] for t in get_args(yields) if get_origin(t) is Emit)
    method.__signature__ = signature.replace(return_annotation=result(returns))
    return method


def _call(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[Any, P], T]:
    return _bind(op, "call", lambda t: t)


def _acall(
    op: Callable[Concatenate[Any, P], Op[T]],
) -> Callable[Concatenate[Any, P], Awaitable[T]]:
    return _bind(op, "call", lambda t: Awaitable[t])


def _iter(
    op: Callable[Concatenate[Any, P], Items[I]],
) -> Callable[Concatenate[Any, P], Iterator[I]]:
    return _bind(op, "iterate", lambda t: Iterator[t])


def _aiter(
    op: Callable[Concatenate[Any, P], Items[I]],
) -> Callable[Concatenate[Any, P], AsyncIterator[I]]:
    return _bind(op, "iterate", lambda t: AsyncIterator[t])


class _Resource:
    def __init__(self, driver: _SyncDriver | _AsyncDriver, ops: Any) -> None:
        self._driver, self._ops = driver, ops


class Jobs(_Resource):
    create = _call(JobOps.create)
    get = _call(JobOps.get)
    list = _iter(JobOps.list)
    cancel = _call(JobOps.cancel)
    pause = _call(JobOps.pause)
    resume = _call(JobOps.resume)
    checkpoints = _iter(JobOps.checkpoints)
    wait = _call(JobOps.wait)
    metrics = _iter(JobOps.metrics)
    events = _iter(JobOps.events)
    stream = _iter(JobOps.stream)
    stream_metrics = _iter(JobOps.stream_metrics)


class AsyncJobs(_Resource):
    create = _acall(JobOps.create)
    get = _acall(JobOps.get)
    list = _aiter(JobOps.list)
    cancel = _acall(JobOps.cancel)
    pause = _acall(JobOps.pause)
    resume = _acall(JobOps.resume)
    checkpoints = _aiter(JobOps.checkpoints)
    wait = _acall(JobOps.wait)
    metrics = _aiter(JobOps.metrics)
    events = _aiter(JobOps.events)
    stream = _aiter(JobOps.stream)
    stream_metrics = _aiter(JobOps.stream_metrics)


class Sweeps(_Resource):
    create = _call(SweepOps.create)
    get = _call(SweepOps.get)
    list = _iter(SweepOps.list)
    trials = _call(SweepOps.trials)
    cancel = _call(SweepOps.cancel)
    wait = _call(SweepOps.wait)
    stream = _iter(SweepOps.stream)


class AsyncSweeps(_Resource):
    create = _acall(SweepOps.create)
    get = _acall(SweepOps.get)
    list = _aiter(SweepOps.list)
    trials = _acall(SweepOps.trials)
    cancel = _acall(SweepOps.cancel)
    wait = _acall(SweepOps.wait)
    stream = _aiter(SweepOps.stream)


class Datasets(_Resource):
    upload = _call(DatasetOps.upload)
    get = _call(DatasetOps.get)
    list = _iter(DatasetOps.list)


class AsyncDatasets(_Resource):
    upload = _acall(DatasetOps.upload)
    get = _acall(DatasetOps.get)
    list = _aiter(DatasetOps.list)


class Models(_Resource):
    get = _call(ModelOps.get)
    list = _iter(ModelOps.list)
    download = _call(ModelOps.download)
    predict = _call(ModelOps.predict)


class AsyncModels(_Resource):
    get = _acall(ModelOps.get)
    list = _aiter(ModelOps.list)
    download = _acall(ModelOps.download)
    predict = _acall(ModelOps.predict)


class RegisteredModels(_Resource):
    list = _iter(RegisteredModelOps.list)
    get = _call(RegisteredModelOps.get)
    register = _call(RegisteredModelOps.register)
    set_alias = _call(RegisteredModelOps.set_alias)
    delete_alias = _call(RegisteredModelOps.delete_alias)


class AsyncRegisteredModels(_Resource):
    list = _aiter(RegisteredModelOps.list)
    get = _acall(RegisteredModelOps.get)
    register = _acall(RegisteredModelOps.register)
    set_alias = _acall(RegisteredModelOps.set_alias)
    delete_alias = _acall(RegisteredModelOps.delete_alias)


class _BaseClient:
    _http_class: type[httpx.Client] | type[httpx.AsyncClient]
    _driver_class: type[_SyncDriver] | type[_AsyncDriver]
    _resources: tuple[type[_Resource], ...]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = self._http_class(**_http_options(base_url, api_key, timeout))
        driver, policy = self._driver_class(self._http), retry or RetryPolicy()  # type: ignore[arg-type]
        self.base_url = str(self._http.base_url)
        jobs, sweeps, datasets, models, registered_models = self._resources
        self.jobs = jobs(driver, JobOps(policy))
        self.sweeps = sweeps(driver, SweepOps(policy))
        self.datasets = datasets(driver, DatasetOps(policy))
        self.models = models(driver, ModelOps(policy))
        self.registered_models = registered_models(driver, RegisteredModelOps(policy))


class Client(_BaseClient):
    """The tunery API. `base_url` and `api_key` default to `TUNERY_URL` (else
    http://127.0.0.1:8000) and `TUNERY_API_KEY`; `timeout` is per request, in seconds;
    `retry` says when a refused or failed request is sent again (`RetryPolicy`)."""

    _http_class, _driver_class = httpx.Client, _SyncDriver
    _resources = (Jobs, Sweeps, Datasets, Models, RegisteredModels)
    jobs: Jobs
    sweeps: Sweeps
    datasets: Datasets
    models: Models
    registered_models: RegisteredModels
    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncClient(_BaseClient):
    """`Client` for asyncio: the same methods, awaited (`await client.jobs.get(id)`); the
    iterating ones (`list`, `metrics`, `events`, `stream`, ...) are async iterators."""

    _http_class, _driver_class = httpx.AsyncClient, _AsyncDriver
    _resources = (AsyncJobs, AsyncSweeps, AsyncDatasets, AsyncModels, AsyncRegisteredModels)
    jobs: AsyncJobs
    sweeps: AsyncSweeps
    datasets: AsyncDatasets
    models: AsyncModels
    registered_models: AsyncRegisteredModels
    _http: httpx.AsyncClient

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
