"""Sweeps in-process on Postgres (no worker runs their trials here): what is refused at
submission, trials queued as jobs up to `max_parallel_trials`, the study in Optuna's tables,
cancel, another tenant's sweep, and the pruner reached through `sweeps.report`."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import session_scope
from app.models import Job, Sweep
from app.services import job_state, sweeps
from tests.conftest import new_tenant
from tests.test_api import assert_problem
from tests.test_core import DIGITS_CNN

SWEEP = {
    "name": "lr-search",
    "job": {**DIGITS_CNN, "hyperparameters": {"epochs": 9}},
    "parameters": {
        "hyperparameters.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "hyperparameters.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "model.params.hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    },
    "objective": {"metric": "accuracy", "split": "validation", "direction": "maximize"},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
    "max_trials": 20,
    "max_parallel_trials": 2,
}


@pytest.fixture(scope="module")
def client(api_database):
    from app.main import app

    key = new_tenant(max_running_jobs=4, max_queued_jobs=1000)
    with TestClient(app, headers=key.headers) as test_client:
        yield test_client


def trial_jobs(client, sweep_id: str) -> list[dict]:
    found = client.get("/v1/jobs", params={"limit": 1000}).json()["data"]
    return sorted(
        (job for job in found if job["sweep_id"] == sweep_id), key=lambda j: j["trial_number"]
    )


def test_a_sweep_queues_its_first_trials_as_jobs_up_to_the_parallel_limit(client):
    response = client.post("/v1/sweeps", json=SWEEP)
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["id"].startswith("sweep_") and sweep["name"] == "lr-search"
    read = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert read["status"] == "running"
    assert read["trials"] == {"running": 2, "completed": 0, "pruned": 0, "failed": 0}
    assert read["best_trial"] is None
    queued = trial_jobs(client, sweep["id"])
    assert [job["trial_number"] for job in queued] == [0, 1]
    assert all(job["status"] == "queued" for job in queued)
    trials = client.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
    for trial, job in zip(trials, queued, strict=True):
        assert trial["job_id"] == job["id"] and trial["state"] == "running"
        hp, params = job["spec"]["hyperparameters"], trial["params"]
        assert hp["learning_rate"] == params["hyperparameters.learning_rate"]
        assert hp["batch_size"] == params["hyperparameters.batch_size"]
        assert job["spec"]["model"]["params"]["hidden"] == params["model.params.hidden"]
        assert 1e-5 <= params["hyperparameters.learning_rate"] <= 1e-1
    assert trials[0]["params"] != trials[1]["params"]
    sweeps.advance(sweep["id"])  # a second driver pass changes nothing: no trial twice
    assert len(trial_jobs(client, sweep["id"])) == 2


def with_(**changes) -> dict:
    return {**SWEEP, **changes}


REFUSED = {
    "the test split": (
        with_(objective={"metric": "accuracy", "split": "test"}),
        "objective.split",
        "held out",
    ),
    "an unknown path": (
        with_(
            parameters={"hyperparameters.learnin_rate": {"type": "float", "low": 0.1, "high": 1}}
        ),
        "parameters.hyperparameters.learnin_rate",
        "learnin_rate",
    ),
    "a batch size of 0": (
        with_(parameters={"hyperparameters.batch_size": {"type": "int", "low": 0, "high": 8}}),
        "parameters.hyperparameters.batch_size",
        "refuses 0",
    ),
    "an unknown model param": (
        with_(parameters={"model.params.width": {"type": "int", "low": 1, "high": 8}}),
        "parameters.model.params.width",
        "width",
    ),
    "a metric never reported": (
        with_(objective={"metric": "f1"}),
        "objective.metric",
        "reports loss, accuracy",
    ),
    "a metric of another task": (
        with_(
            job={
                "kind": "finetune",
                "model": {"architecture": "mlp"},
                "data": {"train": "builtin:diabetes"},
            },
            parameters={"hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1}},
            objective={"metric": "accuracy", "split": "validation"},
        ),
        "objective.metric",
        "reports loss, mae, rmse, r2 on validation",
    ),
    "a grid larger than max_trials": (
        with_(
            sampler={"name": "grid"},
            parameters={"hyperparameters.batch_size": {"type": "int", "low": 8, "high": 64}},
            max_trials=10,
        ),
        "max_trials",
        "57 points",
    ),
    "a grid of a float without step": (
        with_(sampler={"name": "grid"}),
        "parameters.hyperparameters.learning_rate",
        "a step or choices",
    ),
    "more parallel trials than the quota": (
        with_(max_parallel_trials=5),
        "max_parallel_trials",
        "quota of 4",
    ),
    "low above high": (
        with_(parameters={"hyperparameters.epochs": {"type": "int", "low": 9, "high": 3}}),
        "parameters.hyperparameters.epochs.int",
        "above high",
    ),
    "searched epochs with a pruner": (
        with_(parameters={"hyperparameters.epochs": {"type": "int", "low": 3, "high": 9}}),
        "parameters.hyperparameters.epochs",
        "resource",
    ),
    "a bad job": (
        with_(job={**DIGITS_CNN, "model": {"architecture": "nope"}}),
        "job.model.architecture",
        "nope",
    ),
    # Named as the job's own 422 names it, without the kind that tags the job spec's union.
    "a job field out of range": (
        with_(job={**DIGITS_CNN, "hyperparameters": {"epochs": 0}}),
        "job.hyperparameters.epochs",
        "greater than or equal to 1",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_sweep_that_cannot_run_is_refused_naming_the_field_and_nothing_is_queued(client, case):
    body, field, words = REFUSED[case]
    before = len(client.get("/v1/sweeps", params={"limit": 1000}).json()["data"])
    problem = assert_problem(client.post("/v1/sweeps", json=body), 422)
    fields = [error["field"] for error in problem["errors"]]
    assert field in fields, problem
    message = problem["errors"][fields.index(field)]["message"]
    assert words in message, problem
    assert len(client.get("/v1/sweeps", params={"limit": 1000}).json()["data"]) == before


def test_another_tenants_sweep_is_404_on_every_route(client):
    sweep_id = client.post("/v1/sweeps", json=with_(max_parallel_trials=1)).json()["id"]
    from app.main import app

    stranger = new_tenant()
    with TestClient(app, headers=stranger.headers) as other:
        for method, path in [
            ("GET", f"/v1/sweeps/{sweep_id}"),
            ("GET", f"/v1/sweeps/{sweep_id}/trials"),
            ("POST", f"/v1/sweeps/{sweep_id}/cancel"),
            ("GET", f"/v1/sweeps/{sweep_id}/stream"),
        ]:
            assert_problem(other.request(method, path), 404)
        assert other.get("/v1/sweeps").json()["data"] == []
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running"


def test_cancel_stops_the_trials_and_starts_no_more(client):
    sweep_id = client.post("/v1/sweeps", json=SWEEP).json()["id"]
    cancelled = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert [job["status"] for job in trial_jobs(client, sweep_id)] == ["cancelled"] * 2
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    assert [trial["state"] for trial in trials] == ["failed"] * 2
    sweeps.advance(sweep_id)
    assert len(trial_jobs(client, sweep_id)) == 2
    assert_problem(client.post(f"/v1/sweeps/{sweep_id}/cancel"), 409)


def test_a_trial_behind_the_others_is_pruned_and_its_job_ends_pruned(client):
    """Median pruner, no warm-up. Trial 0 reports 0.9 at epoch 1 and completes; trial 1
    reports 0.2 at epoch 1 and is pruned there, its job `pruned`, though its epoch 2 (0.95)
    came with it, as from a trainer ahead of its supervisor: each epoch is judged at its own
    step. The driver tells the study both; the sweep names trial 0 best, with its test figure
    beside its objective."""
    body = with_(
        sampler={"name": "random", "seed": 1},
        pruner={"name": "median", "startup_trials": 0, "warmup_epochs": 0},
        max_trials=2,
    )
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    first, second = (job["id"] for job in trial_jobs(client, sweep_id))
    with session_scope() as session:
        attempts = {job: job_state.claim(session, job, "test", 60) for job in (first, second)}
    go_on = (sweeps.Verdict.GO_ON, None)
    assert sweeps.report(first, attempts[first], [point(epoch=1, value=0.9)]) == go_on
    with session_scope() as session:  # as a worker records a success
        session.execute(
            update(Job)
            .where(Job.id == first)
            .values(status="succeeded", metrics={"validation_accuracy": 0.9, "test_accuracy": 0.85})
        )
    sweeps.advance(sweep_id)
    assert sweeps.report(second, attempts[second], [point(epoch=0, value=0.5)]) == go_on
    ahead = [point(epoch=2, value=0.95), point(epoch=1, value=0.2)]
    assert sweeps.report(second, attempts[second], ahead) == (sweeps.Verdict.PRUNED, 1)
    assert client.get(f"/v1/jobs/{second}").json()["status"] == "pruned"
    events = client.get(f"/v1/jobs/{second}/events").json()["data"]
    assert events[-1]["message"] == "pruned after epoch 1"
    sweeps.advance(sweep_id)
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    assert [t["state"] for t in trials] == ["completed", "pruned"]
    assert trials[1]["intermediate_values"] == {"0": 0.5, "1": 0.2}
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded"
    assert sweep["trials"] == {"running": 0, "completed": 1, "pruned": 1, "failed": 0}
    best = sweep["best_trial"]
    assert (best["number"], best["value"], best["job_id"]) == (0, 0.9, first)
    assert best["test_metrics"] == {"accuracy": 0.85}


def point(epoch: int, value: float) -> dict:
    return {"name": "accuracy", "split": "validation", "epoch": epoch, "value": value}


def test_a_replayed_submission_returns_the_first_sweep(client):
    headers = {"Idempotency-Key": "sweep-once"}
    first = client.post("/v1/sweeps", json=with_(max_trials=2), headers=headers)
    again = client.post("/v1/sweeps", json=with_(max_trials=2), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert len(trial_jobs(client, first.json()["id"])) == 2
    other = client.post("/v1/sweeps", json=with_(max_trials=3), headers=headers)
    assert_problem(other, 422)


def test_the_stream_sends_each_trial_then_the_sweep_then_end(client):
    sweep_id = client.post("/v1/sweeps", json=SWEEP).json()["id"]
    client.post(f"/v1/sweeps/{sweep_id}/cancel")
    with client.stream("GET", f"/v1/sweeps/{sweep_id}/stream") as response:
        assert response.status_code == 200
        events = [
            line.removeprefix("event: ").strip()
            for line in response.iter_lines()
            if line.startswith("event:")
        ]
    assert events == ["trial", "trial", "status", "end"]


def test_a_sweep_with_a_completed_trial_cancels_and_still_names_its_best(client):
    sweep_id = client.post("/v1/sweeps", json=with_(max_parallel_trials=1)).json()["id"]
    (first,) = trial_jobs(client, sweep_id)
    with session_scope() as session:  # as a worker records a success
        session.execute(
            update(Job)
            .where(Job.id == first["id"])
            .values(status="succeeded", metrics={"validation_accuracy": 0.8})
        )
    sweeps.advance(sweep_id)
    cancelled = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text  # was a 500 (a read after the commit)
    assert cancelled.json()["best_trial"]["job_id"] == first["id"]


def test_the_reconciler_tells_a_cancelled_sweeps_study_when_the_cancel_could_not(client):
    """The API died between a cancel's commit and its advance: the study still shows running
    trials, and the reconciler's pass tells it."""
    sweep_id = client.post("/v1/sweeps", json=SWEEP).json()["id"]
    with session_scope() as session:
        tenant_id = session.get(Sweep, sweep_id).tenant_id
        sweeps.cancel_sweep(session, tenant_id, sweep_id)  # no advance after it
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    assert [t["state"] for t in trials] == ["running"] * 2
    sweeps.advance_all()
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    assert [t["state"] for t in trials] == ["failed"] * 2


@pytest.mark.parametrize(("metric", "direction"), [("loss", "minimize"), ("accuracy", "maximize")])
def test_a_sweep_says_which_way_its_objective_is_better_when_the_spec_leaves_it_out(
    client, metric, direction
):
    body = with_(objective={"metric": metric, "split": "validation"})
    created = client.post("/v1/sweeps", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["direction"] == direction
    assert created.json()["spec"]["objective"].get("direction") is None  # as submitted
    client.post(f"/v1/sweeps/{created.json()['id']}/cancel")


def test_with_models_kept_a_pruned_trial_is_told_to_finish_and_its_job_stays_held(client):
    """As above with `keep_models`: the pruner's verdict asks the worker to end the trial's
    training where it is; the job stays running (held by its attempt) until the trainer
    has saved the model, when the worker ends it `pruned` with it. An attempt that resumes
    the trial is told the same."""
    pruner = {"name": "median", "startup_trials": 0, "warmup_epochs": 0, "keep_models": True}
    body = with_(sampler={"name": "random", "seed": 1}, pruner=pruner, max_trials=2)
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    first, second = (job["id"] for job in trial_jobs(client, sweep_id))
    with session_scope() as session:
        attempts = {job: job_state.claim(session, job, "test", 60) for job in (first, second)}
    sweeps.report(first, attempts[first], [point(epoch=1, value=0.9)])
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == first)
            .values(status="succeeded", metrics={"validation_accuracy": 0.9, "test_accuracy": 0.85})
        )
    sweeps.advance(sweep_id)
    verdict = sweeps.report(second, attempts[second], [point(epoch=1, value=0.2)])
    assert verdict == (sweeps.Verdict.FINISH, 1)
    assert client.get(f"/v1/jobs/{second}").json()["status"] == "running"
    with session_scope() as session:  # its worker lost before the model was saved
        lost = "the worker stopped"
        job_state.fail(session, second, attempts[second], "lease_expired", lost, True)
        again = job_state.claim(session, second, "test", 60)
    # The resumed attempt's next epoch would go on (nothing to compare at epoch 2): the
    # decision kept with the trial finishes it.
    verdict = sweeps.report(second, again, [point(epoch=2, value=0.3)])
    assert verdict == (sweeps.Verdict.FINISH, 1)
    client.post(f"/v1/sweeps/{sweep_id}/cancel")
