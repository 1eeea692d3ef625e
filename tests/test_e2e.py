"""End to end, per configuration: a real uvicorn server and a real Celery worker process.

`postgres-redis` is the production setup; `embedded` is what `make run` uses with no
environment (SQLite and kombu's SQLAlchemy transport on SQLite).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from tests.stack import (
    REDIS_URL,
    Stack,
    create_postgres_database,
    drop_postgres_database,
    postgres_url,
    start_stack,
)
from tests.test_core import DIGITS_CNN
from trainer.artifact import load_predictor
from trainer.data import load_dataset

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["postgres-redis", "embedded"])
def stack(request, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    with a_stack(request.param, tmp_path_factory.mktemp(request.param), tag) as stack:
        yield stack


@contextmanager
def a_stack(kind: str, root: Path, tag: str) -> Iterator[Stack]:
    """A stack of either configuration: `postgres-redis` or `embedded` (SQLite for both)."""
    if kind == "postgres-redis":
        database = f"tunery_e2e_{tag}"
        create_postgres_database(database)
        urls = (postgres_url(database), REDIS_URL)
    else:
        urls = (f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db")
    stack = start_stack(root, *urls, queue=f"tunery-e2e-{tag}")
    try:
        yield stack
    finally:
        stack.stop()
        if kind == "postgres-redis":
            drop_postgres_database(database)


def wait_for(client, job_id: str, done, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} stuck: {job}")


def gone(path: Path, timeout: float = 20) -> bool:
    """Whether `path` no longer exists, or stops existing within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not path.exists()


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


LOAD_IN_CLEAN_PROCESS = """
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="np") as f:
    card = json.loads(f.metadata()["tunery.model_card"])
    shapes = {name: list(f.get_tensor(name).shape) for name in f.keys()}
print(json.dumps({"card": card, "shapes": shapes}))
"""


RUN_ONNX_IN_CLEAN_PROCESS = """
import json, sys
from pathlib import Path
import numpy as np, onnxruntime
here = Path(sys.argv[1])
session = onnxruntime.InferenceSession(str(here / "model.onnx"))
inputs = np.asarray(json.loads((here / "inputs.json").read_text()), dtype=np.float32)
probabilities, embeddings = session.run(None, {"inputs": inputs})
assert not any(name.split(".")[0] in ("app", "worker", "torch") for name in sys.modules)
print(json.dumps(probabilities.tolist()))
"""


def test_train_download_and_predict(stack, tmp_path):
    with stack.client() as client:
        job = client.post("/v1/jobs", json={**DIGITS_CNN, "name": "e2e"}).json()
        job = wait_for(client, job["id"], finished)
        assert job["status"] == "succeeded", stack.logs()
        assert job["metrics"]["test_accuracy"] >= 0.95
        assert job["progress"]["epoch"] == 10
        assert job["progress"]["step"] == job["progress"]["total_steps"]

        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
        series: dict[tuple[str, str], list[int]] = {}
        for point in points:
            series.setdefault((point["name"], point["split"]), []).append(point["epoch"])
        epochs = list(range(1, 11))
        assert series[("loss", "train")] == series[("loss", "validation")] == epochs
        assert series[("accuracy", "validation")] == epochs
        test_points = {p["name"]: p["value"] for p in points if p["split"] == "test"}
        metrics = job["metrics"]
        assert test_points == {"accuracy": metrics["test_accuracy"],
                               "macro_f1": metrics["test_macro_f1"]}  # fmt: skip

        events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
        statuses = [e["status"] for e in events if e["type"] == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        assert any(e["type"] == "log" for e in events)
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)

        model = client.get(f"/v1/models/{job['result_model_id']}").json()
        assert model["source_job_id"] == job["id"]
        assert (model["architecture"], model["input_shape"]) == ("cnn", [1, 28, 28])
        assert model["labels"] == [str(d) for d in range(10)]

        download = client.get(
            f"/v1/models/{model['id']}/download", params={"format": "safetensors"}
        )
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == model["sha256"]
        assert download.headers["etag"] == f'"{model["sha256"]}"'
        head = client.get(f"/v1/models/{model['id']}/download", headers={"Range": "bytes=0-7"})
        assert head.status_code == 206
        assert head.content == download.content[:8]
        path = tmp_path / "model.safetensors"
        path.write_bytes(download.content)
        clean = subprocess.run(
            [sys.executable, "-I", "-c", LOAD_IN_CLEAN_PROCESS, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        loaded = json.loads(clean.stdout)
        assert loaded["card"]["metrics"] == job["metrics"]
        assert loaded["shapes"]["head.weight"] == [10, 64]

        test = load_dataset("builtin:digits").splits["test"]
        response = client.post(
            f"/v1/models/{model['id']}/predict", json={"inputs": test.x[:50].tolist()}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        core_model, _ = load_predictor(path)
        with torch.no_grad():
            expected = core_model(test.x[:50]).argmax(dim=1).tolist()
        assert answer["predictions"] == [str(i) for i in expected]
        assert len(answer["probabilities"]) == 50
        assert all(abs(sum(row) - 1) < 1e-5 for row in answer["probabilities"])
        bad = client.post(f"/v1/models/{model['id']}/predict", json={"inputs": [[1.0, 2.0]]})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "inputs"

        # The ONNX file, run by onnxruntime alone, agrees with `predict` on raw inputs.
        onnx = client.get(f"/v1/models/{model['id']}/download", params={"format": "onnx"})
        assert onnx.status_code == 200, onnx.text
        assert onnx.headers["etag"] == f'"{hashlib.sha256(onnx.content).hexdigest()}"'
        (tmp_path / "model.onnx").write_bytes(onnx.content)
        (tmp_path / "inputs.json").write_text(json.dumps(test.x[:50].tolist()))
        served = subprocess.run(
            [sys.executable, "-I", "-c", RUN_ONNX_IN_CLEAN_PROCESS, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        onnx_probabilities = json.loads(served.stdout)
        difference = max(
            abs(a - b)
            for row_a, row_b in zip(onnx_probabilities, answer["probabilities"], strict=True)
            for a, b in zip(row_a, row_b, strict=True)
        )
        assert difference <= 1e-4


def test_cancel_a_running_job_stops_its_trainer(stack):
    with stack.client() as client:
        spec = {**DIGITS_CNN, "hyperparameters": {"epochs": 2000}}
        job = client.post("/v1/jobs", json=spec).json()
        wait_for(client, job["id"], lambda j: j["progress"]["step"] > 0 or finished(j))
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        # The attempt's scratch directory goes with its trainer, then the job's (its checkpoint).
        assert gone(stack.root / "runs" / job["id"] / "attempt-1"), "the trainer was not stopped"
        assert gone(stack.root / "runs" / job["id"]), "the cancelled job's checkpoint was kept"
        final = client.get(f"/v1/jobs/{job['id']}").json()
        assert (final["status"], final["result_model_id"]) == ("cancelled", None)
        models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
        assert job["id"] not in [m["source_job_id"] for m in models]
        step = final["progress"]["step"]
        time.sleep(1.5)
        assert client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] == step


def test_invalid_specs_are_rejected_and_nothing_is_queued(stack):
    with stack.client() as client:
        before = client.get("/v1/jobs", params={"limit": 1000}).json()["data"]
        for body, field in [
            ({**DIGITS_CNN, "hyperparameters": {"epochs": -5}}, "hyperparameters.epochs"),
            ({**DIGITS_CNN, "model": {"architecture": "nope"}}, "model.architecture"),
            ({"kind": "finetune", "data": {"train": "builtin:digits"}}, "model"),
        ]:
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 422
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field]
        assert client.get("/v1/jobs", params={"limit": 1000}).json()["data"] == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a worker without a GPU")
def test_a_deterministic_failure_fails_once_with_its_reason(stack):
    with stack.client() as client:
        job = client.post("/v1/jobs", json={**DIGITS_CNN, "resources": {"device": "cuda"}}).json()
        job = wait_for(client, job["id"], finished)
        assert job["status"] == "failed"
        assert job["error"]["type"] == "device_unavailable"
        assert "cuda" in job["error"]["message"]
        assert (job["attempt"], job["result_model_id"]) == (1, None)


def test_a_job_past_max_runtime_fails_with_timeout(stack):
    with stack.client() as client:
        spec = {
            **DIGITS_CNN,
            "hyperparameters": {"epochs": 2000},
            "resources": {"max_runtime_seconds": 3},
        }
        job = client.post("/v1/jobs", json=spec).json()
        job = wait_for(client, job["id"], finished, timeout=60)
        assert job["status"] == "failed"
        assert job["error"]["type"] == "timeout"
        assert job["result_model_id"] is None


TINY_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}


def test_one_job_of_each_kind_pretrain_then_finetune_then_adapt(stack):
    """pretrain -> finetune from it -> adapt from that, each through the API."""
    few = {"epochs": 2, "batch_size": 32}
    with stack.client() as client:

        def run(spec: dict) -> dict:
            response = client.post("/v1/jobs", json=spec)
            assert response.status_code == 201, response.text
            job = wait_for(client, response.json()["id"], finished)
            assert job["status"] == "succeeded", (job, stack.logs())
            return job

        pretrain = run(
            {"kind": "pretrain", "model": TINY_CNN, "method": {"name": "contrastive"},
             "data": {"train": {"dataset": "builtin:digits-rgb", "per_class": 20}},
             "hyperparameters": few}
        )  # fmt: skip
        assert (
            pretrain["metrics"]["validation_loss"] < pretrain["metrics"]["initial_validation_loss"]
        )
        base = client.get(f"/v1/models/{pretrain['result_model_id']}").json()
        assert (base["task"], base["labels"]) == ("contrastive", [])
        refused = client.post(f"/v1/models/{base['id']}/predict", json={"inputs": [[[[0.0]]]]})
        assert refused.status_code == 409

        finetune = run(
            {"kind": "finetune", "base_model_id": base["id"],
             "method": {"name": "supervised", "params": {"freeze": "backbone"}},
             "data": {"train": {"dataset": "builtin:digits-rgb", "fraction": 0.05}},
             "hyperparameters": few}
        )  # fmt: skip
        tuned = client.get(f"/v1/models/{finetune['result_model_id']}").json()
        assert tuned["parent_model_id"] == base["id"]
        assert 0 < finetune["metrics"]["test_accuracy"] <= 1

        adapt = run(
            {"kind": "adapt", "base_model_id": tuned["id"], "method": {"name": "dann"},
             "data": {"source": {"dataset": "builtin:digits-rgb", "per_class": 10},
                      "target": {"dataset": "builtin:digits-m", "per_class": 10}},
             "hyperparameters": few}
        )  # fmt: skip
        assert set(adapt["metrics"]) >= {"test_accuracy", "source_test_accuracy"}
        adapted = client.get(f"/v1/models/{adapt['result_model_id']}").json()
        assert adapted["input_shape"] == [3, 28, 28]
        # The registry keeps the lineage, the data and the spec of every step.
        assert [(a["id"], a["kind"], a["method"]) for a in adapted["lineage"]] == [
            (base["id"], "pretrain", "contrastive"),
            (tuned["id"], "finetune", "supervised"),
        ]
        assert adapted["datasets"] == {"builtin:digits-rgb": None, "builtin:digits-m": None}
        assert adapted["spec"]["base_model_id"] == tuned["id"]
        children = client.get("/v1/models", params={"parent_id": tuned["id"]}).json()["data"]
        assert [m["id"] for m in children] == [adapted["id"]]
        colour = load_dataset("builtin:digits-m").splits["test"].x[:3].tolist()
        predicted = client.post(f"/v1/models/{adapted['id']}/predict", json={"inputs": colour})
        assert predicted.status_code == 200
        assert len(predicted.json()["predictions"]) == 3


def test_an_uploaded_dataset_trains_and_its_model_predicts_raw_inputs(stack):
    """Upload to the local store, train on it in the worker, predict with the model."""
    from tests import files

    with stack.client() as client:
        dataset = client.post(
            "/v1/datasets",
            files={"file": ("cancer.csv", files.cancer_csv(300))},
            data={"name": "cancer", "task": "classification"},
        ).json()
        spec = {
            "kind": "finetune",
            "model": {"architecture": "mlp"},
            "data": {"train": dataset["id"]},
            "hyperparameters": {"epochs": 30},
        }
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
        assert job["status"] == "succeeded", (job, stack.logs())
        assert job["metrics"]["test_accuracy"] > 0.8  # 300 rows of a separable table
        model = client.get(f"/v1/models/{job['result_model_id']}").json()
        assert model["labels"] == ["benign", "malignant"]
        table = files.cancer_table(300)
        row = [*table.iloc[0, :6].astype(float), float(table["size"][0] == "large")]
        row.append(1.0 - row[-1])
        predict = client.post(f"/v1/models/{model['id']}/predict", json={"inputs": [row]})
        assert predict.status_code == 200, predict.text
        assert predict.json()["predictions"][0] in ("benign", "malignant")


def test_what_a_201_announces_is_readable_at_once(stack):
    """The transaction commits before the answer leaves: reading back straight after a create
    or a cancel never misses it (it did, one time in eight, when the commit came after)."""
    from tests import files

    with stack.client() as client:
        for count in range(40, 60):
            created = client.post(
                "/v1/datasets",
                files={"file": ("cancer.csv", files.cancer_csv(count))},
                data={"name": "cancer", "task": "classification"},
            )
            assert created.status_code == 201, created.text
            assert client.get(f"/v1/datasets/{created.json()['id']}").status_code == 200
        job = client.post("/v1/jobs", json={**DIGITS_CNN, "hyperparameters": {"epochs": 50}})
        client.post(f"/v1/jobs/{job.json()['id']}/cancel").raise_for_status()
        assert client.get(f"/v1/jobs/{job.json()['id']}").json()["status"] == "cancelled"


def test_concurrent_submissions_with_one_idempotency_key_create_one_job(stack):
    from concurrent.futures import ThreadPoolExecutor

    key = {"Idempotency-Key": f"burst-{uuid.uuid4()}"}
    spec = {**DIGITS_CNN, "hyperparameters": {"epochs": 1}}

    def submit(_: int) -> httpx.Response:
        with stack.client() as own:
            return own.post("/v1/jobs", json=spec, headers=key)

    with stack.client() as client:
        before = len(client.get("/v1/jobs", params={"limit": 1000}).json()["data"])
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(8)))
        refused = [(a.status_code, a.text) for a in answers if a.status_code != 201]
        assert not refused, (refused, stack.logs())
        assert len({a.json()["id"] for a in answers}) == 1
        after = client.get("/v1/jobs", params={"limit": 1000}).json()["data"]
        assert len(after) == before + 1
        wait_for(client, answers[0].json()["id"], finished)


def test_a_hugging_face_encoder_finetunes_with_lora_and_predicts_text(stack):
    few = {"dataset": "builtin:bbc-news", "per_class": 2}
    spec = {
        "kind": "finetune",
        "model": {"architecture": "hf_encoder", "params": {"max_length": 32}},
        "method": {"name": "supervised", "params": {"lora_rank": 4}},
        "data": {"train": few, "validation": few, "test": few},
        "hyperparameters": {"epochs": 1, "batch_size": 8},
    }
    with stack.client() as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"], finished)
        assert job["status"] == "succeeded", stack.logs()
        assert job["metrics"]["trained_parameters"] < 0.01 * job["metrics"]["parameters"]
        texts = ["Shares in the bank fell sharply", "The striker scored twice on Saturday"]
        answer = client.post(f"/v1/models/{job['result_model_id']}/predict", json={"inputs": texts})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["predictions"]) == 2
        assert body["labels"] == ["business", "entertainment", "politics", "sports", "tech"]


def sse_events(response: httpx.Response):
    """(event, id, data) of each Server-Sent Event, as a browser's parser reads them."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def test_the_stream_pushes_a_job_live_and_resumes_where_it_dropped(stack):
    spec = {**DIGITS_CNN, "hyperparameters": {"epochs": 6}}
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        seen: list[tuple[str, str, dict]] = []
        with client.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(response):
                seen.append(event)
                if sum(kind == "metric" for kind, _, _ in seen) == 4:
                    break  # the connection drops mid-job
        live_status = client.get(f"/v1/jobs/{job_id}").json()["status"]
        resume = {"Last-Event-ID": seen[-1][1]}
        with client.stream("GET", f"/v1/jobs/{job_id}/stream", headers=resume) as response:
            seen += list(sse_events(response))
        assert live_status in ("queued", "running"), "the job ended before the drop: not live"

        kinds = [kind for kind, _, _ in seen]
        assert kinds[0] == "status" and kinds[-1] == "end" and kinds.count("end") == 1
        assert seen[-1][2]["status"] == "succeeded"
        streamed = [data for kind, _, data in seen if kind == "metric"]
        stored = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
        assert streamed == stored  # every point once, in order, across the reconnect
        logged = [data["id"] for kind, _, data in seen if kind == "log"]
        assert logged == [e["id"] for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]]
        statuses = [data["status"] for kind, _, data in seen if kind == "status"]
        assert statuses[-1] == "succeeded" and "running" in statuses

        bad = client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "Last-Event-ID"
        assert client.get("/v1/jobs/job_unknown/stream").status_code == 404


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or it ended meanwhile
        if fields[0] != "Z" and int(fields[3]) == pgid:
            members.append(int(entry.name))
    return members


def _stop_the_whole_worker(stack: Stack) -> None:
    """SIGTERM to every process of the stack's worker at once; each must exit, the main one
    with status 0, its pool processes at its bidding, not killed by the signal."""
    worker = stack.processes[-1]
    members = _group(worker.pid)
    assert len(members) >= 3, members  # the main process, its pool process, the zygote
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, stack.logs()
    deadline = time.monotonic() + 10
    while _group(worker.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(worker.pid) == [], "a process of the worker outlived it"
    worker_logs = "".join(log.read_text() for log in stack.root.glob("worker*.log"))
    assert "exited with 'signal" not in worker_logs, stack.logs()


@pytest.mark.parametrize("kind", ["postgres-redis", "embedded"])
def test_sigterm_to_the_whole_worker_stops_every_process_and_hands_the_job_back(kind, tmp_path):
    """systemd's KillMode=control-group and `kill -- -PGID` send SIGTERM to every process of a
    worker at once. Idle, or running a job: its main process, its pool process and the trainers'
    zygote all exit, and a running job is checkpointed and queued again, as on the main
    process's own SIGTERM, never taken up again by the stopping worker."""
    with a_stack(kind, tmp_path, uuid.uuid4().hex[:8]) as stack, stack.client() as client:
        short = {**DIGITS_CNN, "hyperparameters": {"epochs": 1}}
        done = client.post("/v1/jobs", json=short).json()["id"]
        assert wait_for(client, done, finished)["status"] == "succeeded", stack.logs()
        _stop_the_whole_worker(stack)  # idle
        stack.start_worker()
        long = {**DIGITS_CNN, "hyperparameters": {"epochs": 500}}
        running = client.post("/v1/jobs", json=long).json()["id"]
        wait_for(client, running, lambda j: j["progress"]["step"] > 0 or finished(j))
        _stop_the_whole_worker(stack)  # running a job
        job = client.get(f"/v1/jobs/{running}").json()
        assert (job["status"], job["attempt"]) == ("queued", 1), job
        events = client.get(f"/v1/jobs/{running}/events").json()["data"]
        assert any(e["message"].startswith("queued: interrupted") for e in events), events
