"""Jobs on several machines (`resources.nodes`), with real processes throughout: two
`trainer.launch` processes meeting at torchrun's c10d rendezvous against a single process;
and through the API on Postgres and Redis, with Celery workers as the machines (each its own
run and cache directories; gloo on the CPU): a gang that cannot form waits and says why, then
forms when a second worker arrives; a member killed mid-epoch ends the attempt, and the retry
resumes every rank from the checkpoint; an elastic job goes on without it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.stack import postgres_redis_stack, trainer_pids
from tests.test_distributed import SEVERAL_STEP_EPOCHS, finish, job, metric_values, start
from tests.test_e2e import finished, wait_for


def start_machine(
    run_dir: Path,
    spec: dict,
    nodes: int,
    port: int,
    leader: bool,
    streams: dict[str, dict] | None = None,
):
    """One machine's `trainer.launch` of a job of `nodes` machines, events on stdout."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "job_id": "job_test",
        "model_id": "model_test",
        "spec": spec | {"resources": {"nodes": nodes}},
        "streams": streams or {},
        "output_path": str(run_dir / "model.safetensors"),
        "checkpoint_dir": str(run_dir / "checkpoints"),
        "checkpoint_every_steps": 5,
    }
    (run_dir / "run.json").write_text(json.dumps(run))
    rendezvous = ["--nnodes", str(nodes), "--rdzv-endpoint", f"127.0.0.1:{port}",
                  "--rdzv-id", "job_test-1", "--local-addr", "127.0.0.1"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.launch", "--nproc-per-node", "1", *rendezvous,
         *(["--leader"] if leader else []), "-m", "trainer.main", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=open(run_dir / "stderr.log", "wb"),
        text=True,
        start_new_session=True,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_machines_take_the_steps_of_one_process(tmp_path):
    port = free_port()
    leader = start_machine(tmp_path / "leader", SEVERAL_STEP_EPOCHS, 2, port, leader=True)
    member = start_machine(tmp_path / "member", SEVERAL_STEP_EPOCHS, 2, port, leader=False)
    one = start(tmp_path / "one", SEVERAL_STEP_EPOCHS, 1)
    reported, from_member, single = finish(leader), finish(member), finish(one)
    assert (leader.returncode, member.returncode, one.returncode) == (0, 0, 0), (
        tmp_path / "member" / "stderr.log"
    ).read_text()

    # The leader's first rank reports everything; the member nothing.
    assert from_member == []
    steps = metric_values(single, "loss", "train")
    assert len(steps) == 12 and steps[-1] < steps[0]
    assert torch.allclose(
        torch.tensor(metric_values(reported, "loss", "train")), torch.tensor(steps), rtol=1e-5
    )
    # The model and the checkpoints are the leader's.
    assert not (tmp_path / "member" / "model.safetensors").exists()
    assert not (tmp_path / "member" / "checkpoints").exists()
    weights = load_file(tmp_path / "leader" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "one" / "model.safetensors").items():
        assert torch.allclose(weights[name], tensor, atol=1e-5), name


# Long enough to be killed mid-run: 100 examples in batches of 10, 10 steps an epoch.
LONG = job({"dataset": "builtin:digits", "per_class": 10}, epochs=40, batch_size=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One worker at first: a second machine arrives in the first test."""
    root = tmp_path_factory.mktemp("nodes")
    env = {
        "TUNERY_GANG_WAIT_SECONDS": "4",
        "TUNERY_GANG_RETRY_SECONDS": "1",
        "TUNERY_NODE_ADDRESS": "127.0.0.1",
        "TUNERY_CHECKPOINT_EVERY_STEPS": "20",
    }
    with postgres_redis_stack(root, "nodes", extra_env=env) as s:
        yield s


def add_a_second_machine(stack) -> None:
    """A second worker, with its own run and cache directories, unless it is there already."""
    if len(stack.processes) < 3:  # the API and the first worker
        root = stack.root / "machine-2"
        env = {"TUNERY_RUN_DIR": str(root / "runs"), "TUNERY_CACHE_DIR": str(root / "cache")}
        stack.start_worker(extra_env=env)


@pytest.fixture
def two_machines(stack):
    add_a_second_machine(stack)
    return stack


def events_of(client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]


def models_of(client, job_id: str) -> list[dict]:
    models = client.get("/v1/models", params={"limit": 1000}).json()["data"]
    return [m for m in models if m["source_job_id"] == job_id]


@pytest.mark.e2e
def test_a_gang_that_cannot_form_waits_queued_and_starts_when_a_second_worker_arrives(stack):
    spec = job({"dataset": "builtin:digits", "per_class": 10}, epochs=2, batch_size=20)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=spec | {"resources": {"nodes": 2}}).json()["id"]
        deadline = time.monotonic() + 60
        while not any("waiting for 2 machines" in e["message"] for e in events_of(client, job_id)):
            assert time.monotonic() < deadline, (events_of(client, job_id), stack.logs())
            time.sleep(0.5)
        time.sleep(6)  # more tries, one event
        waiting = client.get(f"/v1/jobs/{job_id}").json()
        assert (waiting["status"], waiting["attempt"]) == ("queued", 0)
        messages = [e["message"] for e in events_of(client, job_id)]
        why = [m for m in messages if "waiting for 2 machines" in m]
        assert why == [
            "waiting for 2 machines: 0 of the 1 other workers of queue "
            f"{stack.env['TUNERY_QUEUE']!r} it needs joined within 4 s; trying again"
        ]

        add_a_second_machine(stack)
        done = wait_for(client, job_id, finished, timeout=180)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert (done["attempt"], done["progress"]["step"]) == (1, 2 * 5)
        assert len(models_of(client, job_id)) == 1


@pytest.mark.e2e
def test_a_machine_killed_mid_epoch_ends_the_attempt_and_the_job_resumes_on_all_ranks(
    two_machines,
):
    stack = two_machines
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG | {"resources": {"nodes": 2}}).json()["id"]
        kill_the_member_after_a_checkpoint(client, job_id, stack)
        done = wait_for(client, job_id, finished, timeout=300)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["attempt"] == 2 and done["progress"]["step"] == 40 * 10
        messages = [e["message"] for e in events_of(client, job_id)]
        assert any("peer_lost" in m or "machine 1 of the job's 2" in m for m in messages), messages
        assert len([m for m in messages if m.startswith("resumed from the checkpoint")]) == 1
        assert len(models_of(client, job_id)) == 1
        assert no_trainer_left(job_id), "a rank or launcher of the job outlived it"


@pytest.mark.e2e
def test_an_elastic_job_goes_on_without_a_machine_it_lost(two_machines):
    stack = two_machines
    elastic = {"nodes": 2, "elastic": {"min_nodes": 1, "max_restarts": 1}}
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=LONG | {"resources": elastic}).json()["id"]
        kill_the_member_after_a_checkpoint(client, job_id, stack)
        done = wait_for(client, job_id, finished, timeout=300)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["attempt"] == 1 and done["progress"]["step"] == 40 * 10
        messages = [e["message"] for e in events_of(client, job_id)]
        assert len([m for m in messages if m.startswith("resumed from the checkpoint")]) == 1
        assert len(models_of(client, job_id)) == 1
        assert no_trainer_left(job_id), "a rank or launcher of the job outlived it"


def no_trainer_left(job_id: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while trainer_pids(job_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    return trainer_pids(job_id) == []


def trainer_launchers() -> dict[int, str]:
    found = subprocess.run(["pgrep", "-af", "trainer.launch"], capture_output=True, text=True)
    return {int(line.split()[0]): line for line in found.stdout.splitlines()}


def kill_the_member_after_a_checkpoint(client, job_id: str, stack) -> None:
    """kill -9 the launcher (and so the ranks) of the machine that joined the job's gang."""
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"] == []:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.3)
    members = [pid for pid, line in trainer_launchers().items()
               if job_id in line and "-machine-" in line]  # fmt: skip
    assert len(members) == 1, trainer_launchers()
    os.killpg(members[0], signal.SIGKILL)
