"""A Hypothesis stateful test of the job state machine on Postgres: random sequences of
claims, lease renewals and lapses, successes, failures, cancels, pauses, resumes and reaps, from
current and stale attempts, checked against a model of what each transition may do."""

from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import update

from app.db import session_scope
from app.models import Job, Model, new_id, utcnow
from app.services import job_state
from tests.test_core import DIGITS_CNN
from tests.test_job_state import a_model

MAX_ATTEMPTS = 3


class JobLifecycle(RuleBasedStateMachine):
    tenant_id: str  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.job_id = new_id("job")
        with session_scope() as session:
            session.add(
                Job(id=self.job_id, tenant_id=self.tenant_id, kind="finetune", status="queued",
                    spec=DIGITS_CNN, max_attempts=MAX_ATTEMPTS)
            )  # fmt: skip
        self.status, self.attempt, self.models = "queued", 0, 0
        # A pause asked of a running job, and the attempts allowed: one more for each attempt
        # a pause stopped, which is not counted.
        self.pause_requested, self.max_attempts = False, MAX_ATTEMPTS

    def _held_by(self, attempt: int) -> bool:
        return self.status == "running" and attempt == self.attempt

    @rule()
    def claim(self) -> None:
        with session_scope() as session:
            claimed = job_state.claim(session, self.job_id, "test", 60)
        if self.status == "queued" and self.attempt < self.max_attempts:
            self.attempt += 1
            self.status = "running"
            assert claimed == self.attempt
        else:
            assert claimed is None

    @rule(stale=st.booleans())
    def renew(self, stale: bool) -> None:
        attempt = self.attempt - 1 if stale else self.attempt
        with session_scope() as session:
            renewed = job_state.renew_lease(session, self.job_id, attempt, 60)
        if not self._held_by(attempt):
            assert renewed is job_state.Lease.LOST
        else:
            paused = self.pause_requested
            assert renewed is (job_state.Lease.PAUSE if paused else job_state.Lease.HELD)

    @rule(stale=st.booleans())
    def succeed(self, stale: bool) -> None:
        attempt = self.attempt - 1 if stale else self.attempt
        with session_scope() as session:
            done = job_state.succeed(session, self.job_id, attempt, a_model(self.job_id), {})
        assert done == self._held_by(attempt)
        if done:
            self.status, self.models = "succeeded", self.models + 1
            self.pause_requested = False

    @rule(stale=st.booleans(), retryable=st.booleans())
    def fail(self, stale: bool, retryable: bool) -> None:
        attempt = self.attempt - 1 if stale else self.attempt
        with session_scope() as session:
            status = job_state.fail(session, self.job_id, attempt, "x", "y", retryable)
        if not self._held_by(attempt):
            assert status is None
            return
        self._stopped(retryable)
        assert status == self.status

    def _stopped(self, retryable: bool) -> None:
        if retryable and self.pause_requested:
            self.status, self.pause_requested = "paused", False
            self.max_attempts += 1
        else:
            self.status = "queued" if retryable and self.attempt < self.max_attempts else "failed"

    @rule()
    def cancel(self) -> None:
        with session_scope() as session:
            cancelled = job_state.cancel(session, session.get(Job, self.job_id))
        assert cancelled == (self.status in ("queued", "running", "paused"))
        if cancelled:
            self.status, self.pause_requested = "cancelled", False

    @rule()
    def pause(self) -> None:
        with session_scope() as session:
            paused = job_state.pause(session, session.get(Job, self.job_id))
        assert paused == (
            self.status == "queued" or (self.status == "running" and not self.pause_requested)
        )
        if self.status == "queued":
            self.status = "paused"
        elif self.status == "running":
            self.pause_requested = True

    @rule()
    def resume(self) -> None:
        with session_scope() as session:
            resumed = job_state.resume(session, session.get(Job, self.job_id))
        assert resumed == (self.status == "paused" or self.pause_requested)
        if self.status == "paused":
            self.status = "queued"
        self.pause_requested = False

    @rule()
    def worker_dies_and_the_reaper_runs(self) -> None:
        with session_scope() as session:
            session.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        with session_scope() as session:
            job_state.reap_expired_leases(session, utcnow())
        if self.status == "running":
            self._stopped(retryable=True)

    @invariant()
    def matches_the_model(self) -> None:
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            models = session.query(Model).filter(Model.source_job_id == self.job_id).count()
        assert (job.status, job.attempt) == (self.status, self.attempt)
        assert (job.pause_requested_at is not None) == self.pause_requested
        assert job.max_attempts == self.max_attempts and job.attempt <= self.max_attempts
        assert models == self.models <= 1
        assert (job.result_model_id is not None) == (job.status == "succeeded")


def test_job_lifecycle_follows_its_state_machine(api_key):
    JobLifecycle.tenant_id = api_key.tenant_id
    JobLifecycle.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    JobLifecycle.TestCase().runTest()
