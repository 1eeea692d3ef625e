"""MLflow: a job that names a tracking server is logged there by the worker (params, tags,
every metric point, the model), one run however many attempts it takes; a server that cannot
be reached costs the job nothing but an event. Against a real `mlflow server` process, with a
real API server and Celery worker on Postgres and Redis."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.utils.validation import validate_param_and_metric_name
from safetensors import safe_open

from tests.servers import free_port
from tests.stack import postgres_redis_stack, trainer_pids
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for
from tests.test_sweeps_e2e import sweep_over, trial_jobs
from worker.mlflow_logging import metric_key

pytestmark = pytest.mark.e2e

SMALL_CNN = {"architecture": "cnn", "params": {"channels": [4, 8], "hidden": 16}}
EVERY = 10  # the stack's checkpoint interval, in steps


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on SQLite, its artifacts in a local directory it serves: its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
               "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    # Its job runner (for GenAI evaluations) is not installed with mlflow-skinny.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as out:
        # A session of its own: the server runs uvicorn as a child, which goes with it.
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                log = (root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{log}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A short lease and re-dispatch delay: the resumed attempt starts within seconds.
    settings = {
        "TUNERY_CHECKPOINT_EVERY_STEPS": str(EVERY),
        "TUNERY_LEASE_SECONDS": "4",
        "TUNERY_REDISPATCH_AFTER_SECONDS": "3",
    }
    with postgres_redis_stack(tmp_path_factory.mktemp("mlflow-stack"), "mlflow", 1, settings) as s:
        yield s


def the_run(tracking_uri: str, experiment: str, job_id: str, timeout: float = 60):
    """The job's one MLflow run, once it has ended (after the job: the worker logs the model
    and ends the run as the attempt ends)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    deadline = time.monotonic() + timeout
    while True:
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`tunery.job_id` = '{job_id}'"
        )
        assert len(runs) == 1, runs  # no run twice, whatever the attempts
        if runs[0].info.status != "RUNNING" or time.monotonic() > deadline:
            return client, runs[0]
        time.sleep(0.5)


def assert_metrics_are_tunerys(client, mlflow, run) -> None:
    """Every metric point of the job, as `/v1/jobs/{id}/metrics` gives it, is in the run:
    `<split>_<name>` at its step, with the same value, and nothing else is."""
    points = client.get(
        f"/v1/jobs/{run.data.tags['tunery.job_id']}/metrics", params={"limit": 1000}
    )
    expected = sorted(
        (f"{p['split']}_{p['name']}", p["step"], p["value"]) for p in points.json()["data"]
    )
    assert {key for key, _, _ in expected} == set(run.data.metrics)
    logged = sorted(
        (key, m.step, m.value)
        for key in run.data.metrics
        for m in mlflow.get_metric_history(run.info.run_id, key)
    )
    assert logged == expected


def mlflow_warnings(client, job_id: str, timeout: float = 30) -> list[str]:
    """The job's events about MLflow, once there is one (the worker's logging thread writes
    them, maybe after the job's end)."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
        found = [e["message"] for e in events if e["message"].startswith("MLflow at ")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def logged_job(tracking_uri: str, experiment: str, **hyperparameters) -> dict:
    """A small digits job that logs to the MLflow server at `tracking_uri`."""
    return {
        **DIGITS_CNN,
        "model": SMALL_CNN,
        "data": {"train": {"dataset": "builtin:digits", "fraction": 0.3}},
        "hyperparameters": hyperparameters,
        "integrations": [
            {"type": "mlflow", "tracking_uri": tracking_uri, "experiment": experiment}
        ],
    }


def test_a_job_is_logged_to_mlflow_params_metrics_tags_and_model(stack, mlflow_server, tmp_path):
    hyperparameters = {"epochs": 2, "batch_size": 64, "learning_rate": 0.003}
    spec = {**logged_job(mlflow_server, "tunery-e2e", **hyperparameters), "name": "logged"}
    with stack.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        job = wait_for(client, job["id"], finished)
        assert job["status"] == "succeeded", stack.logs()
        mlflow, run = the_run(mlflow_server, "tunery-e2e", job["id"])
        assert run.info.status == "FINISHED", stack.logs()
        assert run.info.run_name == "logged"

        params = run.data.params
        assert params["kind"] == "finetune"
        assert params["hyperparameters.epochs"] == "2"
        assert params["hyperparameters.learning_rate"] == "0.003"
        assert params["model.params.channels"] == "[4, 8]"
        assert params["data.train.dataset"] == "builtin:digits"
        assert params["data.train.fraction"] == "0.3"
        assert not [key for key in params if key.startswith("integrations")]

        tags = {k: v for k, v in run.data.tags.items() if k.startswith("tunery.")}
        assert tags == {
            "tunery.job_id": job["id"],
            "tunery.kind": "finetune",
            "tunery.method": "supervised",
            "tunery.architecture": "cnn",
            "tunery.attempt": "1",
            "tunery.model_id": job["result_model_id"],
        }

        assert_metrics_are_tunerys(client, mlflow, run)
        assert run.data.metrics["validation_accuracy"] == job["metrics"]["validation_accuracy"]

        artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id, "model")}
        assert artifacts == {"model/model.safetensors", "model/card.json"}
        downloaded = download_artifacts(
            run_id=run.info.run_id, artifact_path="model", dst_path=str(tmp_path),
            tracking_uri=mlflow_server,
        )  # fmt: skip
        local = Path(downloaded)
        model = client.get(f"/v1/models/{job['result_model_id']}/download")
        assert model.status_code == 200
        logged = (local / "model.safetensors").read_bytes()
        assert hashlib.sha256(logged).hexdigest() == model.headers["X-Content-SHA256"]
        with safe_open(local / "model.safetensors", framework="np") as weights:
            card = json.loads(weights.metadata()["tunery.model_card"])
        assert json.loads((local / "card.json").read_text()) == card
        assert card["model_id"] == job["result_model_id"]

        assert mlflow_warnings(client, job["id"], timeout=0) == []


def test_a_resumed_job_goes_on_logging_to_its_run(stack, mlflow_server):
    spec = {
        **DIGITS_CNN,
        "model": SMALL_CNN,
        # Long enough to be killed: this small a CNN trains hundreds of steps a second.
        "hyperparameters": {"epochs": 30, "batch_size": 32},
        "integrations": [{"type": "mlflow", "tracking_uri": mlflow_server}],
    }
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for(client, job_id, lambda j: j["progress"]["step"] > 1.5 * EVERY or finished(j))
        pids = trainer_pids(job_id)
        assert pids, "the trainer finished before it could be killed"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        job = wait_for(client, job_id, finished, timeout=300)
        assert job["status"] == "succeeded", stack.logs()
        assert job["attempt"] == 2
        mlflow, run = the_run(mlflow_server, "Default", job_id)  # one run: asserted there
        assert run.info.status == "FINISHED"
        assert run.data.tags["tunery.attempt"] == "2"
        assert_metrics_are_tunerys(client, mlflow, run)  # both attempts' points


def test_a_tracking_server_that_cannot_be_reached_costs_the_job_nothing_but_an_event(stack):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = logged_job(dead, "x", epochs=2)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_for(client, job_id, finished)
        assert job["status"] == "succeeded", stack.logs()
        assert job["result_model_id"]
        warnings = mlflow_warnings(client, job_id)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"MLflow at {dead} could not be reached"), warnings
        assert "(MlflowException" in warnings[0], warnings  # what failed, not what was said


def test_a_sweeps_trials_inherit_its_integration_each_a_run_tagged_with_the_sweep(
    stack, mlflow_server
):
    job = logged_job(mlflow_server, "lr", epochs=1)
    rates = [0.001, 0.01]
    body = {
        "job": job,
        "parameters": {"hyperparameters.learning_rate": {"type": "categorical", "choices": rates}},
        "sampler": {"name": "grid"},
        "max_trials": 2,
    }
    with stack.client() as client:
        sweep = client.post("/v1/sweeps", json=body).json()
        assert sweep_over(client, sweep["id"])["status"] == "succeeded", stack.logs()
        trials = trial_jobs(client, sweep["id"])
    assert len(trials) == 2
    for trial in trials:
        _, run = the_run(mlflow_server, "lr", trial["id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["tunery.sweep_id"] == sweep["id"]
        rate = trial["spec"]["hyperparameters"]["learning_rate"]
        assert run.data.params["hyperparameters.learning_rate"] == str(rate)
    mlflow = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = mlflow.get_experiment_by_name("lr").experiment_id
    tagged = mlflow.search_runs([experiment_id], f"tags.`tunery.sweep_id` = '{sweep['id']}'")
    assert sorted(r.data.tags["tunery.job_id"] for r in tagged) == sorted(t["id"] for t in trials)
    assert sorted(float(r.data.params["hyperparameters.learning_rate"]) for r in tagged) == rates


def test_a_worker_holding_mlflow_credentials_sends_them_nowhere(stack, mlflow_server):
    """The client would send a token in the environment to whichever server a job names."""
    os.killpg(stack.processes[1].pid, signal.SIGKILL)  # the stack's worker: jobs go to this one
    stack.processes[1].wait()
    stack.start_worker(extra_env={"MLFLOW_TRACKING_TOKEN": "the-operators-token"})
    spec = logged_job(mlflow_server, "held", epochs=1)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_for(client, job_id, finished)
        assert job["status"] == "succeeded", stack.logs()
        assert mlflow_warnings(client, job_id) == [
            f"MLflow at {mlflow_server} is not logged to: this worker holds MLflow credentials "
            "(MLFLOW_TRACKING_TOKEN), which the client would send to any server a job names"
        ]
    assert MlflowClient(tracking_uri=mlflow_server).get_experiment_by_name("held") is None


def test_a_metric_key_is_one_mlflow_takes_whatever_a_target_column_is_called():
    key = metric_key("validation", "mae_price ($)/día:1")
    assert key == "validation_mae_price ____día_1"
    assert validate_param_and_metric_name(key)


@pytest.fixture(scope="module")
def api(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("integrations", "field"),
    [
        ([{"type": "mlflow", "tracking_uri": "file:///var/lib/tunery"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "databricks"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "https://me:secret@mlflow.example"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "http://mlflow.example:port"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "http://m.example", "experiment": ""}], "experiment"),
        ([{"type": "wandb", "project": "p"}], "type"),
        ([{"type": "mlflow", "tracking_uri": "http://m.example", "run": "r"}], "run"),
        ([{"type": "mlflow", "tracking_uri": "http://m.example"}] * 2, "integrations"),
        # The operator's network, which TUNERY_MLFLOW_ALLOW does not name here.
        ([{"type": "mlflow", "tracking_uri": "http://169.254.169.254/latest?"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "http://10.0.0.1:5000"}], "tracking_uri"),
        ([{"type": "mlflow", "tracking_uri": "https://127.0.0.1"}], "tracking_uri"),
    ],
)
def test_an_integration_is_checked_at_submission(api, integrations, field):
    response = api.post("/v1/jobs", json={**DIGITS_CNN, "integrations": integrations})
    assert response.status_code == 422, response.text
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(f.startswith("integrations") and f.endswith(field) for f in fields), fields


def test_a_server_answer_never_reaches_the_jobs_events_nor_a_worker_its_artifact_location():
    from mlflow.exceptions import MlflowException

    from worker.mlflow_logging import ArtifactsElsewhere, _check_artifact_store, _reason

    answer = "Response body: 'AccessKeyId: ASIA... SecretAccessKey: ...'"
    reason = _reason(MlflowException(answer, error_code="INTERNAL_ERROR"))
    assert "AccessKeyId" not in reason and reason.startswith("MlflowException")
    assert "AccessKeyId" not in _reason(ConnectionError(answer))
    for location in ("file:///var/lib/tunery", "s3://the-operators-bucket/runs", "/tmp/runs"):
        with pytest.raises(ArtifactsElsewhere):
            _check_artifact_store(location)
    _check_artifact_store("mlflow-artifacts:/0/abc/artifacts")
