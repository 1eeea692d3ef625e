"""The job state machine on Postgres: claims, fencing, cancel races, reaper and reconciler."""

import os
from datetime import timedelta

import pytest
import redis

from app.db import session_scope
from app.models import Job, Model, new_id, utcnow
from app.services import job_state, reconciler
from tests.test_core import DIGITS_CNN
from trainer.card import ModelCard


@pytest.fixture
def job_id(api_key) -> str:
    with session_scope() as session:
        job = Job(
            id=new_id("job"),
            tenant_id=api_key.tenant_id,
            kind="finetune",
            status="queued",
            spec=DIGITS_CNN,
            max_attempts=2,
        )
        session.add(job)
    return job.id


def status_of(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def claim(job_id: str, lease_seconds: float = 60) -> int | None:
    with session_scope() as session:
        return job_state.claim(session, job_id, "test", lease_seconds)


def a_model(job_id: str) -> Model:
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id
    return Model(
        id=new_id("model"),
        tenant_id=tenant_id,
        source_job_id=job_id,
        architecture="cnn",
        task="classification",
        card=ModelCard(
            architecture="cnn", input_shape=[1, 28, 28], task="classification", labels=["0", "1"]
        ),
        path="x",
        sha256="0" * 64,
        size_bytes=1,
    )


def test_a_second_delivery_cannot_claim_a_running_job(job_id):
    assert claim(job_id) == 1
    assert claim(job_id) is None
    assert status_of(job_id).attempt == 1


def test_only_the_attempt_holding_the_lease_records_a_result(job_id):
    assert claim(job_id) == 1
    with session_scope() as session:
        assert not job_state.renew_lease(session, job_id, 2, 60)
        assert not job_state.succeed(session, job_id, 2, a_model(job_id), {})
        assert job_state.renew_lease(session, job_id, 1, 60, progress_step=5)
    with session_scope() as session:
        assert job_state.succeed(session, job_id, 1, a_model(job_id), {"test_accuracy": 1.0})
    job = status_of(job_id)
    assert (job.status, job.progress_step, job.metrics) == ("succeeded", 5, {"test_accuracy": 1.0})


def test_cancel_and_success_race_ends_in_exactly_one(job_id):
    claim(job_id)
    with session_scope() as session:
        assert job_state.cancel(session, session.get(Job, job_id))
    with session_scope() as session:
        assert not job_state.succeed(session, job_id, 1, a_model(job_id), {})
        assert not job_state.renew_lease(session, job_id, 1, 60)
        assert not job_state.cancel(session, session.get(Job, job_id))
    job = status_of(job_id)
    assert (job.status, job.result_model_id) == ("cancelled", None)


def test_retryable_failures_requeue_until_attempts_run_out(job_id):
    claim(job_id)
    with session_scope() as session:
        assert job_state.fail(session, job_id, 1, "trainer_killed", "signal 9", True) == "queued"
    assert claim(job_id) == 2
    with session_scope() as session:
        assert job_state.fail(session, job_id, 2, "trainer_killed", "signal 9", True) == "failed"
    assert claim(job_id) is None
    job = status_of(job_id)
    assert (job.status, job.error_type, job.attempt) == ("failed", "trainer_killed", 2)


def test_deterministic_failure_is_not_retried(job_id):
    claim(job_id)
    with session_scope() as session:
        assert job_state.fail(session, job_id, 1, "training_error", "bad", False) == "failed"


def test_reaper_requeues_a_job_whose_lease_expired_and_leaves_live_ones(job_id, api_key):
    claim(job_id, lease_seconds=-1)
    live = Job(id=new_id("job"), tenant_id=api_key.tenant_id, kind="finetune", status="queued",
               spec=DIGITS_CNN, max_attempts=2)  # fmt: skip
    with session_scope() as session:
        session.add(live)
    claim(live.id, lease_seconds=60)
    with session_scope() as session:
        requeued = job_state.reap_expired_leases(session, utcnow())
    assert job_id in requeued and live.id not in requeued
    assert status_of(job_id).status == "queued"
    assert status_of(job_id).error_type == "lease_expired"
    assert status_of(live.id).status == "running"


def test_reconciler_sends_jobs_never_dispatched_and_marks_them(job_id):
    queue = redis.Redis.from_url(os.environ["TUNERY_BROKER_URL"])
    queue.delete(os.environ["TUNERY_QUEUE"])
    assert status_of(job_id).dispatched_at is None
    reconciler.reconcile_once()
    assert status_of(job_id).dispatched_at is not None
    assert queue.llen(os.environ["TUNERY_QUEUE"]) >= 1
    with session_scope() as session:
        recent = utcnow() - timedelta(seconds=60)
        assert job_id not in job_state.jobs_to_dispatch(session, recent)
    queue.delete(os.environ["TUNERY_QUEUE"])
