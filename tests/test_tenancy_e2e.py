"""Tenancy across real processes: a tenant's running-jobs quota held by real workers, keys made
and revoked with the admin CLI against a running server, and no key in any log."""

import time
import uuid
from datetime import datetime

import pytest

from tests.stack import admin, postgres_redis_stack
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for

pytestmark = pytest.mark.e2e
QUICK = DIGITS_CNN | {"hyperparameters": {"epochs": 2}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = {"TUNERY_AUTH_CACHE_SECONDS": "1"}
    root = tmp_path_factory.mktemp("tenancy")
    with postgres_redis_stack(root, "tenancy", concurrency=2, extra_env=settings) as stack:
        yield stack


def test_a_tenant_never_runs_more_jobs_than_its_quota(stack):
    key = stack.new_key("--max-running-jobs", "1")
    with stack.client(key) as client:
        ids = [client.post("/v1/jobs", json=QUICK).json()["id"] for _ in range(2)]
        jobs = [wait_for(client, job_id, finished) for job_id in ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * 2, stack.logs()
        first, second = sorted(jobs, key=lambda job: job["started_at"])
        # Two worker processes were free, yet the second job started after the first ended.
        assert datetime.fromisoformat(second["started_at"]) >= datetime.fromisoformat(
            first["finished_at"]
        )
        events = client.get(f"/v1/jobs/{second['id']}/events").json()["data"]
        assert any("max_running_jobs" in event["message"] for event in events)
    with stack.client() as neighbour:  # another tenant's jobs are not held back by it
        job = neighbour.post("/v1/jobs", json=QUICK).json()
        assert wait_for(neighbour, job["id"], finished)["status"] == "succeeded"


def _cli(stack, *args: str) -> list[str]:
    return admin(stack.env, *args).stdout.strip().splitlines()


def test_keys_from_the_admin_cli_work_until_revoked(stack):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    assert _cli(stack, "create-tenant", name)[-1].startswith(f"created tenant {name}")
    created = _cli(stack, "create-key", "--tenant", name, "--name", "ci")
    key_id, secret = created[0].split()[3], created[-1]
    assert secret.startswith("tunery_") and key_id.startswith("key_")
    with stack.client(secret) as client:
        assert client.get("/v1/jobs").status_code == 200
        assert _cli(stack, "list-keys", "--tenant", name)[0].split("\t")[:3] == [
            key_id, "read-write", "active"
        ]  # fmt: skip
        _cli(stack, "revoke-key", key_id)
        deadline = time.monotonic() + 5
        while client.get("/v1/jobs").status_code == 200:
            assert time.monotonic() < deadline, "a revoked key still works after 5 s"
            time.sleep(0.2)
        assert client.get("/v1/jobs").status_code == 401
    refused = admin(stack.env, "create-key", "--tenant", "nobody", check=False)
    assert refused.returncode == 1 and "no tenant named 'nobody'" in refused.stderr


def test_no_key_is_written_to_any_log(stack):
    with stack.client() as client:
        client.get("/v1/jobs", headers={"Authorization": "Bearer tunery_wrong-key-in-a-request"})
        client.post("/v1/jobs", json=QUICK)
    logs = "\n".join(path.read_text(errors="replace") for path in stack.root.glob("*.log"))
    assert "GET /v1/jobs" in logs  # the access log is there, and it is the API's
    for secret in (stack.key, "tunery_wrong-key-in-a-request"):
        assert secret not in logs
