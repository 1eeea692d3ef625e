"""Webhooks with real processes on Postgres and Redis, sent to a real receiver process that
verifies each signature (tests/webhook_receiver.py), while the API is killed in the middle of
a send and the worker in the middle of a job: every event arrives, each time under one
`webhook-id`; an answer of 500 is retried; the delivery log shows every attempt; a redelivery
sends the same message again."""

import os
import signal
import time
from collections import defaultdict

import pytest

from tests.stack import postgres_redis_stack, trainer_pids
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished, wait_for
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.e2e

EVERY = 10  # checkpoint interval, in steps
TIMEOUT = 3  # seconds a request may take; a claim's lease is four of them
HOLD = 2  # seconds the receiver holds its first request of a `job.cancelled` message
JOB_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = {
        "TUNERY_WEBHOOK_ALLOW": "127.0.0.0/8",  # the receiver, on loopback
        "TUNERY_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
        "TUNERY_WEBHOOK_RETRY_FIRST_SECONDS": "1",
        "TUNERY_CHECKPOINT_EVERY_STEPS": str(EVERY),
        "TUNERY_LEASE_SECONDS": "4",
        "TUNERY_REDISPATCH_AFTER_SECONDS": "3",
    }
    root = tmp_path_factory.mktemp("webhooks")
    with postgres_redis_stack(root, "webhooks", extra_env=settings) as s:
        yield s


def test_every_event_arrives_signed_under_one_id_through_kills_retries_and_redelivery(
    stack, tmp_path
):
    receiving = {
        "RECEIVER_FAIL_FIRST": "webhook.ping",
        "RECEIVER_HOLD_FIRST": "job.cancelled",
        "RECEIVER_HOLD_SECONDS": str(HOLD),
    }
    with receiver(tmp_path, receiving) as running:
        client = stack.client()
        made = client.post("/v1/webhooks", json={"url": running.url(), "events": JOB_EVENTS})
        assert made.status_code == 201, made.text
        webhook = made.json()
        running.secret_file.write_text(webhook["secret"])

        # A ping, answered 500 the first time: retried a second later.
        ping = client.post(f"/v1/webhooks/{webhook['id']}/ping").json()

        # A cancel, whose first request the receiver holds while the API is killed: the claim
        # of the killed API lapses, and the new API sends it again, under the same id.
        queued = client.post(
            "/v1/jobs", json={**DIGITS_CNN, "hyperparameters": {"epochs": 40}}
        ).json()
        assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 200
        running.wait_for(lambda got: any(r["payload"]["type"] == "job.cancelled" for r in got))
        stack.restart_api()
        client.close()
        client = stack.client()  # its connections were to the killed API

        # A job whose worker is killed past a checkpoint: resumed by another, it succeeds once.
        resumed = client.post(
            "/v1/jobs", json={**DIGITS_CNN, "hyperparameters": {"epochs": 4}}
        ).json()
        wait_for(client, resumed["id"], lambda j: j["progress"]["step"] > 1.5 * EVERY)
        assert trainer_pids(resumed["id"]), "the trainer finished before it could be killed"
        worker = stack.processes[-1]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        stack.start_worker()
        # A job that fails: past its runtime limit.
        failing = client.post(
            "/v1/jobs",
            json={
                **DIGITS_CNN,
                "hyperparameters": {"epochs": 2000},
                "resources": {"max_runtime_seconds": 2},
            },
        ).json()
        statuses = {
            job_id: wait_for(client, job_id, finished, timeout=300)["status"]
            for job_id in (resumed["id"], failing["id"])
        }
        assert statuses == {resumed["id"]: "succeeded", failing["id"]: "failed"}, stack.logs()

        expected = {
            ("webhook.ping", webhook["id"]),
            ("job.cancelled", queued["id"]),
            ("job.succeeded", resumed["id"]),
            ("job.failed", failing["id"]),
        }

        def about(record: dict) -> tuple[str, str]:
            data = record["payload"]["data"]
            return record["payload"]["type"], data.get("id", data.get("webhook_id"))

        received = running.wait_for(lambda got: {about(r) for r in got} >= expected, timeout=120)
        assert all(r["verified"] for r in received), received
        assert {about(r) for r in received} == expected
        ids = defaultdict(set)
        for record in received:
            ids[about(record)].add(record["id"])
        assert all(len(message_ids) == 1 for message_ids in ids.values()), ids
        cancelled = [r for r in received if about(r) == ("job.cancelled", queued["id"])]
        assert len(cancelled) == 2, "the request the killed API made, and the one after"

        log = deliveries_when_done(client, webhook["id"])
        by_event = {d["event_id"]: d for d in log}
        assert set(by_event) == {message_ids.pop() for message_ids in ids.values()}
        assert all(d["status"] == "succeeded" for d in log), log
        pinged = by_event[ping["event_id"]]
        assert [a["response_status"] for a in pinged["attempt_log"]] == [500, 204], pinged
        assert pinged["attempt_log"][0]["error"] == "answered 500"
        held = by_event[cancelled[0]["id"]]
        # Attempt 1 died with the API and left no record; attempt 2, after its lease, did.
        assert held["attempts"] == 2, held
        assert [(a["number"], a["response_status"]) for a in held["attempt_log"]] == [(2, 204)]

        # A redelivery of the succeeded job's message: the same id, once more.
        succeeded = next(d for d in log if d["event_type"] == "job.succeeded")
        path = f"/v1/webhooks/{webhook['id']}/deliveries/{succeeded['id']}/redeliver"
        assert client.post(path).status_code == 202
        count = len(received)
        again = running.wait_for(lambda got: len(got) > count)[count]
        assert (again["id"], again["verified"]) == (succeeded["event_id"], True)
        redelivered = next(
            d for d in deliveries_when_done(client, webhook["id"]) if d["id"] == succeeded["id"]
        )
        assert redelivered["status"] == "succeeded"
        assert len(redelivered["attempt_log"]) == len(succeeded["attempt_log"]) + 1
        client.close()


def deliveries_when_done(client, webhook_id: str, timeout: float = 60) -> list[dict]:
    """The webhook's delivery log once no delivery is pending."""
    deadline = time.monotonic() + timeout
    while True:
        log = client.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100}).json()
        if all(d["status"] != "pending" for d in log["data"]) or time.monotonic() > deadline:
            return log["data"]
        time.sleep(0.3)
