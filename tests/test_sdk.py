"""The Python SDK against a live stack: a real API server and Celery worker on Postgres and
Redis. The async client trains and streams a job while a rate-limited tenant's call waits out
its 429 beside it; the other tests read that job. One more job is streamed across a restart
of the API server, and so is a small sweep; the async client lists, waits on and cancels
sweeps."""

import asyncio
import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.files import cancer_csv
from tests.stack import free_port, postgres_redis_stack
from tunery import (
    APIConnectionError,
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    Job,
    MetricPoint,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    WaitTimeout,
)
from tunery._sse import SSEDecoder
from tunery.types import (
    DatasetSelection,
    FinetuneSpec,
    Hyperparameters,
    ModelSpec,
    SweepSpec,
    TrainData,
)

pytestmark = pytest.mark.e2e

# Eight epochs of the digits CNN: long enough to be seen running (a forked trainer with no
# start-up to speak of trains an epoch in about half a second), a few seconds on a CPU.
SPEC = FinetuneSpec(
    kind="finetune",
    name="sdk",
    model=ModelSpec(architecture="cnn"),
    data=TrainData(train=DatasetSelection(dataset="builtin:digits")),
    hyperparameters=Hyperparameters(epochs=8),
)
RATE = 3  # requests a minute for the rate-limited tenant
# Two trials of one epoch, one at a time: a sweep over in seconds.
SWEEP = SweepSpec.model_validate(
    {
        "name": "sdk-sweep",
        "job": {
            **SPEC.model_dump(mode="json", exclude_unset=True),
            "hyperparameters": {"epochs": 1},
        },
        "parameters": {
            "hyperparameters.learning_rate": {
                "type": "float",
                "low": 1e-3,
                "high": 1e-2,
                "log": True,
            }
        },
        "sampler": {"name": "random", "seed": 0},
        "max_trials": 2,
    }
)


def test_sdk_imports_no_server_stack():
    """Neither the SDK nor the command loads the server's stack, torch or Optuna; `SweepSpec`
    (which needs Optuna) is loaded when asked for."""
    code = (
        "import sys, tunery, tunery.cli;"
        "print(sorted({'fastapi', 'starlette', 'sqlalchemy', 'celery', 'torch', 'optuna'}"
        " & {m.split('.')[0] for m in sys.modules}));"
        "from tunery.types import SweepSpec;"
        "print(SweepSpec.__name__, 'optuna' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "SweepSpec True"]


def test_sse_decoder_reads_the_standard_format_split_anywhere():
    stream = (
        "\ufeff: ping\r\n"
        "retry: 2500\r\n"
        'event: status\r\nid: 0-0\r\ndata: {"a":\r\ndata:  1}\r\n\r\n'
        "id: 1-0\nevent: metric\ndata:x\n\n"
        "event: ignored\n\n"  # no data: nothing is dispatched, as in a browser
        "data\rid: 2-5\r\r"  # a field with no colon, lone CRs as line ends
    ).encode()
    expected = [("status", '{"a":\n 1}', "0-0"), ("metric", "x", "1-0"), ("message", "", "2-5")]
    for size in (1, 2, 3, 7, len(stream)):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(stream), size):
            events += decoder.feed(stream[start : start + size])
        assert [(e.event, e.data, e.id) for e in events] == expected, size
        assert (decoder.retry, decoder.last_event_id) == (2500, "2-5")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with postgres_redis_stack(tmp_path_factory.mktemp("sdk"), "sdk") as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.base_url, stack.key) as client:
        yield client


@dataclass
class AsyncRun:
    job: Job  # the final one, from `wait`
    streamed: list  # what `stream_metrics` yielded, in order
    retry_after: float  # the 429's advice, when the tenant's rate ran out
    refused_at: float  # time.monotonic() of that 429
    patient_done_at: float  # when the same call, with retries, succeeded
    impatient_seconds: float  # how long a call whose policy refuses to wait took to fail


async def _all(items) -> list:
    return [item async for item in items]


async def _train_and_stream(client: AsyncClient) -> tuple[Job, list]:
    created = await client.jobs.create(SPEC)
    streamed = await _all(client.jobs.stream_metrics(created.id))
    return await client.jobs.wait(created.id, timeout=120), streamed


async def _wait_out_rate_limit(url: str, key: str) -> tuple[float, float, float, float]:
    """Spend the tenant's requests, then the same call three ways: no retries (RateLimited at
    once), a policy that will not wait that long (the same), the default (waits, succeeds)."""
    async with AsyncClient(url, key, retry=RetryPolicy(max_retries=0)) as strict:
        for _ in range(RATE + 2):
            try:
                await _all(strict.jobs.list())
            except RateLimited as error:
                refused_at, retry_after = time.monotonic(), error.retry_after
                break
        else:
            raise AssertionError(f"{RATE + 2} requests were not rate limited")
    async with AsyncClient(url, key, retry=RetryPolicy(max_wait=0.1)) as impatient:
        started = time.monotonic()
        with pytest.raises(RateLimited):
            await _all(impatient.jobs.list())
        impatient_seconds = time.monotonic() - started
    async with AsyncClient(url, key) as patient:
        assert await _all(patient.jobs.list()) == []
    return retry_after, refused_at, time.monotonic(), impatient_seconds


@pytest.fixture(scope="module")
def async_run(stack) -> AsyncRun:
    limited_key = stack.new_key("--requests-per-minute", str(RATE))

    async def run() -> AsyncRun:
        async with AsyncClient(stack.base_url, stack.key) as client:
            (job, streamed), limited = await asyncio.gather(
                _train_and_stream(client), _wait_out_rate_limit(stack.base_url, limited_key)
            )
        return AsyncRun(job, streamed, *limited)

    return asyncio.run(run())


def test_async_client_trains_and_streams_metrics_in_order(client, async_run):
    job, streamed = async_run.job, async_run.streamed
    assert job.status == "succeeded", job.error
    assert isinstance(streamed[0], Job) and isinstance(streamed[-1], Job)
    assert streamed[-1].status == "succeeded"
    points = [item for item in streamed if isinstance(item, MetricPoint)]
    # Live: the job was still running after its first points arrived.
    first = streamed.index(points[0])
    assert any(isinstance(i, Job) and i.status == "running" for i in streamed[first:])
    # In order, each once: exactly what the paginated metrics route holds.
    assert points == list(client.jobs.metrics(job.id, page_size=4))
    assert [p.epoch for p in points if (p.name, p.split) == ("loss", "train")] == list(range(1, 9))


def test_retry_waits_out_retry_after(async_run):
    run = async_run
    assert run.retry_after is not None and run.retry_after >= 1
    # Retry-After is the whole seconds left, rounded up: at least that less one had to pass.
    assert run.patient_done_at - run.refused_at >= run.retry_after - 1
    assert run.impatient_seconds < 1  # a Retry-After past max_wait is raised, not slept


def test_wait_metrics_events_download_and_predict(client, async_run, tmp_path):
    from trainer.data import load_dataset

    job = client.jobs.wait(async_run.job.id, timeout=1)  # finished: answers at once
    statuses = [e.status for e in client.jobs.events(job.id, page_size=2) if e.type == "status"]
    assert statuses == ["queued", "running", "succeeded"]

    model = client.models.get(job.result_model_id)
    assert model.source_job_id == job.id and model.input_shape == [1, 28, 28]
    saved = client.models.download(model.id, path=tmp_path)  # a directory: the server's name
    assert saved.parent == tmp_path and saved.suffix == ".safetensors"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == model.sha256
    assert not list(tmp_path.glob(".*.part"))

    test = load_dataset("builtin:digits").splits["test"]
    answer = client.models.predict(model.id, test.x[:8])  # a tensor: sent as nested lists
    assert len(answer.predictions) == len(answer.probabilities) == 8
    assert answer.labels == [str(d) for d in range(10)]
    hits = sum(p == str(int(y)) for p, y in zip(answer.predictions, test.y[:8], strict=True))
    assert hits >= 4


def test_stream_resumes_after_the_last_event_id(client, async_run):
    job_id = async_run.job.id
    full = list(client.jobs.stream(job_id))
    assert (full[0].type, full[-1].type) == ("status", "end")
    assert full[-1].data == client.jobs.get(job_id)
    middle = next(i for i, e in enumerate(full) if e.type == "metric")
    resumed = list(client.jobs.stream(job_id, last_event_id=full[middle].id))

    def of_type(events, kind):
        return [e.data for e in events if e.type == kind]

    # Each kind in its order, nothing twice; the server may interleave kinds differently.
    for kind in ("metric", "log"):
        assert of_type(resumed, kind) == of_type(full[middle + 1 :], kind), kind


def test_list_paginates_and_cancel(stack):
    # A tenant whose jobs may never start: they stay queued, and no trainer is spent on them.
    with Client(stack.base_url, stack.new_key("--max-running-jobs", "0")) as client:
        created = [
            client.jobs.create({**SPEC.model_dump(mode="json"), "name": f"j{i}"}) for i in range(5)
        ]
        again = client.jobs.create(SPEC, idempotency_key="same")
        assert client.jobs.create(SPEC, idempotency_key="same").id == again.id
        created.append(again)
        newest_first = [job.id for job in reversed(created)]
        assert [job.id for job in client.jobs.list(page_size=2)] == newest_first
        assert [job.id for job in client.jobs.list(status="queued", page_size=4)] == newest_first

        assert client.jobs.cancel(again.id).status == "cancelled"
        with pytest.raises(Conflict) as refused:
            client.jobs.cancel(again.id)
        assert refused.value.status == 409
        assert [job.id for job in client.jobs.list(status="cancelled")] == [again.id]


def test_typed_errors_carry_the_problem(stack, client):
    with pytest.raises(NotFound) as missing:
        client.jobs.get("job_missing")
    error = missing.value
    assert (error.status, error.title) == (404, "Not Found")
    assert error.detail == "no job with id 'job_missing'"
    assert error.problem["instance"] == "/v1/jobs/job_missing"

    with pytest.raises(InvalidRequest) as invalid:
        client.jobs.create({**SPEC.model_dump(mode="json"), "hyperparameters": {"epochs": 0}})
    assert invalid.value.status == 422
    assert [e["field"] for e in invalid.value.errors] == ["hyperparameters.epochs"]
    assert "hyperparameters.epochs" in str(invalid.value)

    with Client(stack.base_url, "tunery_not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.jobs.get("job_missing")

    nobody = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_retries=2, backoff=0.01)
    with Client(nobody, stack.key, retry=policy) as lost, pytest.raises(APIConnectionError):
        lost.datasets.get("ds_missing")


def test_upload_sync_and_async(client, stack, tmp_path):
    csv = tmp_path / "cancer.csv"
    csv.write_bytes(cancer_csv(120))
    dataset = client.datasets.upload(csv, task="classification", progress=True)
    assert (dataset.name, dataset.format, dataset.num_examples) == ("cancer", "csv", 120)
    assert dataset.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert client.datasets.get(dataset.id) == dataset

    other = tmp_path / "other.csv"
    other.write_bytes(cancer_csv(80))

    async def upload() -> list:
        async with AsyncClient(stack.base_url, stack.key) as aclient:
            await aclient.datasets.upload(other, name="other", progress=False)
            return await _all(aclient.datasets.list(page_size=1))

    listed = asyncio.run(upload())
    assert [d.name for d in listed][:2] == ["other", "cancer"]

    bad = tmp_path / "bad.csv"
    bad.write_text("label\n")
    with pytest.raises(InvalidRequest) as refused:
        client.datasets.upload(bad, progress=False)
    problem = refused.value.problem  # the whole body, as sent
    assert (problem["status"], problem["instance"]) == (422, "/v1/datasets")
    assert [e["field"] for e in refused.value.errors] == ["file"]


def test_stream_resumes_across_an_api_restart(stack, client):
    """The connection dies with the server (-9); the stream reconnects with Last-Event-ID
    and carries on: every point once, in order, up to the final Job."""
    job = client.jobs.create({**SPEC.model_dump(mode="json"), "name": "restart"})
    items, restarted = [], False
    for item in client.jobs.stream_metrics(job.id):
        items.append(item)
        if isinstance(item, MetricPoint) and not restarted:
            stack.restart_api()
            restarted = True
    assert restarted and isinstance(items[-1], Job) and items[-1].status == "succeeded"
    points = [item for item in items if isinstance(item, MetricPoint)]
    assert points == list(client.jobs.metrics(job.id))
    assert f"/v1/jobs/{job.id}/stream" in (stack.root / "api-restarted.log").read_text()


def test_sweep_streamed_across_an_api_restart_to_its_best_trial(stack, client):
    """The server's sweep stream has no ids: after the restart it starts again from the present
    state, trial 0 completed included, and the SDK hands out no state twice."""
    created = client.sweeps.create(SWEEP)
    assert (created.name, created.status) == ("sdk-sweep", "queued")
    events, restarted = [], False
    for event in client.sweeps.stream(created.id):
        events.append(event)
        if event.type == "trial" and event.data.state == "completed" and not restarted:
            stack.restart_api()
            restarted = True
    assert restarted and events[-1].type == "end"
    assert f"/v1/sweeps/{created.id}/stream" in (stack.root / "api-restarted.log").read_text()
    sweep = client.sweeps.wait(created.id, timeout=1)  # over: answers at once
    assert sweep.status == "succeeded" and events[-1].data == sweep
    assert sweep.trials.model_dump() == {"running": 0, "completed": 2, "pruned": 0, "failed": 0}

    trials = client.sweeps.trials(created.id)
    assert [(t.number, t.state) for t in trials] == [(0, "completed"), (1, "completed")]
    last_seen = {e.data.number: e.data for e in events if e.type == "trial"}
    assert last_seen == {t.number: t for t in trials}
    states = [(e.type, e.data) for e in events if e.type != "end"]
    assert all(states.count(state) == 1 for state in states), states
    assert [e.type for e in events].count("status") >= 2  # queued or running, then succeeded

    best = max(trials, key=lambda t: t.value)
    assert (sweep.best_trial.number, sweep.best_trial.value) == (best.number, best.value)
    job = client.jobs.get(best.job_id)
    assert (job.sweep_id, job.trial_number) == (created.id, best.number)
    assert sweep.best_trial.model_id == job.result_model_id is not None
    assert (
        job.spec["hyperparameters"]["learning_rate"] == best.params["hyperparameters.learning_rate"]
    )


def test_async_sweeps_list_wait_cancel_and_refuse(stack):
    key = stack.new_key("--max-running-jobs", "1")  # the first sweep's trial holds the slot
    body = SWEEP.model_dump(mode="json")  # a dict, as well as a SweepSpec

    async def run() -> None:
        async with AsyncClient(stack.base_url, key) as aclient:
            first = await aclient.sweeps.create(body, idempotency_key="sweep-once")
            again = await aclient.sweeps.create(body, idempotency_key="sweep-once")
            second = await aclient.sweeps.create({**body, "name": "second"})
            assert again.id == first.id != second.id
            listed = await _all(aclient.sweeps.list(page_size=1))
            assert [s.id for s in listed] == [second.id, first.id]

            with pytest.raises(WaitTimeout) as late:
                await aclient.sweeps.wait(second.id, timeout=0.2)
            assert late.value.sweep.id == second.id and late.value.job is None
            assert late.value.sweep.status in ("queued", "running")

            assert (await aclient.sweeps.cancel(first.id)).status == "cancelled"
            with pytest.raises(Conflict):
                await aclient.sweeps.cancel(first.id)
            streamed = await _all(aclient.sweeps.stream(first.id))
            assert streamed[-1].type == "end" and streamed[-1].data.status == "cancelled"
            # Its trials were told they failed before the stream ended. (The `end` event's
            # trial counts may be older than its trial events: the server reads them apart.)
            trials = await aclient.sweeps.trials(first.id)
            assert trials and all(t.state == "failed" for t in trials), trials
            last_seen = {e.data.number: e.data for e in streamed if e.type == "trial"}
            assert last_seen == {t.number: t for t in trials}
            final = await aclient.sweeps.wait(first.id, timeout=30)
            assert (final.status, final.trials.failed) == ("cancelled", len(trials))
            assert (await aclient.sweeps.cancel(second.id)).status == "cancelled"

            with pytest.raises(NotFound) as missing:
                await aclient.sweeps.get("sweep_missing")
            assert missing.value.detail == "no sweep with id 'sweep_missing'"
            with pytest.raises(InvalidRequest) as invalid:
                await aclient.sweeps.create({**body, "objective": {"split": "test"}})
            assert [e["field"] for e in invalid.value.errors] == ["objective.split"]

    asyncio.run(run())
