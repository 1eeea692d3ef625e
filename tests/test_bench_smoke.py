"""The performance benchmarks' measurements run on tiny settings and give sane numbers, with
the real processes the scripts use: an API server and a Celery worker on Postgres and Redis,
trainer processes, a Celery ping worker."""

import pytest

from bench import dispatch, ingest, overhead
from bench.timing import postgres_redis_stack

pytestmark = pytest.mark.e2e

TINY_CNN = overhead.Case(
    "tiny cnn", "cnn", {"dataset": "builtin:digits", "fraction": 0.1}, epochs=2, batch_size=64
)
JOBS = 2


@pytest.fixture(scope="module")
def stack():
    """One service for the three benchmarks, started as bench.ingest starts its phases."""
    with postgres_redis_stack(concurrency=JOBS, extra_env=ingest.ingest_env(JOBS)) as stack:
        yield stack


def test_overhead_measures_both_sides_over_the_same_samples(stack):
    with stack.client() as client:
        service = overhead.service_throughput(client, stack, TINY_CNN)
    plain = overhead.fresh_plain_throughput(TINY_CNN, 1, stack.env)
    assert service.samples == plain.samples > 0  # one epoch of the same training split
    assert 0 < service.seconds < 30 and 0 < plain.seconds < 30
    assert 0 < service.cpu_seconds < 30 and 0 < plain.cpu_seconds < 30
    assert 0.1 < service.per_second / plain.per_second < 10
    assert 0 <= service.others_cpu_seconds < service.cpu_seconds


def test_dispatch_times_a_job_the_broker_and_a_direct_trainer(stack):
    found = dispatch.measure(stack, jobs=1)
    (job,) = found.jobs
    assert 0 < job.post_s < job.to_first_step_s < 60
    assert 0 < job.to_claim_s < 10
    assert 0 < found.hops[0] < 5
    (direct,) = found.direct
    assert 0 < direct.ready_s < direct.first_step_s < 60
    (imports,) = found.imports
    assert 0 < imports.interpreter_s < imports.trainer_s < 30
    assert imports.sklearn_s > 0 and imports.dynamo_s > 0
    assert "POST → first training step, p50 of 1 jobs" in dispatch.report(found)


def test_ingest_stores_every_point_of_concurrent_jobs(stack):
    phase = ingest.run_phase(stack, logs_steps=True, jobs=JOBS, epochs=6)
    assert phase.stored == phase.sent and min(phase.sent) == 2 * 6 * 79  # two a step
    assert phase.epoch_points_ok
    assert all(100 < rate < 2000 for rate in phase.delivered_per_s)
    assert len(phase.step_rates) == JOBS and min(phase.step_rates) > 0 and phase.window_s > 0
    assert phase.cpu_s["trainer"] > 0 and phase.cpu_s["worker"] > 0
