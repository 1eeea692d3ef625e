"""Webhooks in-process, on Postgres: the address guard, the routes, the outbox written with the
change it tells of, and single attempts against a real receiver process (tests/webhook_receiver.py).
Delivery from the outbox while processes are killed: tests/test_webhooks_e2e.py."""

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from standardwebhooks import Webhook

from app.config import get_settings
from app.db import session_scope
from app.models import Job, WebhookAttempt, WebhookDelivery, WebhookEvent, utcnow
from app.services import outbound_addresses, sweeps, webhook_delivery, webhooks
from tests.conftest import new_tenant
from tests.test_api import assert_problem
from tests.test_core import DIGITS_CNN
from tests.test_registry import import_model, network, weights
from tests.test_sweeps import SWEEP, with_
from tests.webhook_receiver import receiver, self_signed

PUBLIC_URL = "https://93.184.215.14/hooks"  # a public address: made, never sent to in-process
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.fixture(scope="module")
def app(api_database):
    from app.main import app

    return app


@pytest.fixture
def client(app):
    with TestClient(app, headers=new_tenant().headers) as test_client:
        yield test_client


# The guard


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "0.0.0.0",
        "::",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier NAT)
        "169.254.169.254",  # AWS, GCP, Azure metadata
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique-local)
        "fe80::1",
        "fc00::1",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "192.0.2.1",  # documentation
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "2002:7f00:1::1",  # 6to4 of loopback
        "64:ff9b:1::a00:1",  # local-use NAT64, into the operator's 10.0.0.1
        "::10.0.0.1",  # IPv4-compatible
        "fec0::1",  # site-local
    ],
)
def test_addresses_that_are_not_public_are_refused(address):
    assert not outbound_addresses.is_allowed(ipaddress.ip_address(address), [])


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert outbound_addresses.is_allowed(ipaddress.ip_address(address), [])


def test_a_range_the_operator_allows_is_reached_by_http_too():
    loopback = ipaddress.ip_address("127.0.0.1")
    assert outbound_addresses.is_allowed(loopback, LOOPBACK)
    assert not outbound_addresses.is_allowed(ipaddress.ip_address("10.0.0.1"), LOOPBACK)
    outbound_addresses.check_addresses("localhost", [loopback], https=False, allow=LOOPBACK)
    public = ipaddress.ip_address("8.8.8.8")
    outbound_addresses.check_addresses("example.com", [public], https=True, allow=[])
    with pytest.raises(outbound_addresses.ForbiddenAddress, match="https"):
        outbound_addresses.check_addresses("example.com", [public], https=False, allow=LOOPBACK)


def test_a_name_is_refused_if_any_of_its_addresses_is():
    public, private = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    with pytest.raises(outbound_addresses.ForbiddenAddress, match=r"10\.0\.0\.1"):
        outbound_addresses.check_addresses("mixed.example", [public, private], True, [])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "https"),
        ("/relative/path", "https"),
        ("https://user:password@8.8.8.8/", "credentials"),
        ("https://[::1", "not a URL"),
    ],
)
def test_urls_that_cannot_be_webhooks_are_refused(url, message):
    with pytest.raises(outbound_addresses.ForbiddenAddress, match=message):
        outbound_addresses.parse(url)


def test_names_are_resolved_and_every_address_checked():
    with pytest.raises(outbound_addresses.ForbiddenAddress, match="not a public address"):
        outbound_addresses.resolve(outbound_addresses.parse("https://localhost/hooks"), [])
    with pytest.raises(outbound_addresses.ForbiddenAddress, match="does not resolve"):
        outbound_addresses.resolve(outbound_addresses.parse("https://no-such-host.invalid/"), [])
    url = outbound_addresses.parse("https://8.8.8.8:8443/hooks")
    assert outbound_addresses.resolve(url, []) == [ipaddress.ip_address("8.8.8.8")]


def test_retries_double_from_the_first_delay_up_to_the_longest():
    settings = get_settings()
    first, longest = settings.webhook_retry_first_seconds, settings.webhook_retry_longest_seconds
    for attempt in range(1, 30):
        expected = min(first * 2 ** (attempt - 1), longest)
        assert 0.8 * expected <= webhook_delivery.retry_delay(attempt) <= 1.2 * expected
    # A day of retries, as the specification's schedules have: a dozen or more attempts.
    elapsed, attempts = 0.0, 0
    while elapsed < settings.webhook_retry_for_seconds:
        attempts += 1
        elapsed += min(first * 2 ** (attempts - 1), longest)
    assert 12 <= attempts <= 20


# The routes


def test_a_webhook_is_made_read_changed_and_deleted_its_secret_shown_once(client):
    made = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.succeeded"]})
    assert made.status_code == 201, made.text
    webhook = made.json()
    assert webhook["secret"].startswith("whsec_")
    Webhook(webhook["secret"])  # the library reads it
    assert (webhook["url"], webhook["events"], webhook["enabled"]) == (
        PUBLIC_URL,
        ["job.succeeded"],
        True,
    )
    read = client.get(f"/v1/webhooks/{webhook['id']}").json()
    assert "secret" not in read and read["id"] == webhook["id"]
    listed = client.get("/v1/webhooks").json()
    assert [w["id"] for w in listed["data"]] == [webhook["id"]]
    assert "secret" not in listed["data"][0]
    changed = client.patch(
        f"/v1/webhooks/{webhook['id']}",
        json={"events": ["job.failed", "job.failed", "sweep.succeeded"], "enabled": False},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["job.failed", "sweep.succeeded"]
    assert changed.json()["enabled"] is False
    assert client.delete(f"/v1/webhooks/{webhook['id']}").status_code == 204
    assert_problem(client.get(f"/v1/webhooks/{webhook['id']}"), 404)
    assert client.get("/v1/webhooks").json()["data"] == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.215.14/hooks", "must be https"),
        ("https://127.0.0.1/hooks", "not a public address"),
        ("https://localhost:8443/hooks", "not a public address"),
        ("https://[::1]/hooks", "not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "not a public address"),
        ("https://10.0.0.8/hooks", "not a public address"),
        ("https://[fd00:ec2::254]/", "not a public address"),
        ("https://no-such-host.invalid/hooks", "does not resolve"),
        ("ftp://93.184.215.14/hooks", "https"),
        ("https://user:pw@93.184.215.14/hooks", "credentials"),
        ("not a url", "https"),
    ],
)
def test_a_webhook_url_that_may_not_be_reached_is_a_422_on_url(client, url, message):
    made = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.failed"]}).json()
    for response in (
        client.post("/v1/webhooks", json={"url": url, "events": ["job.failed"]}),
        client.patch(f"/v1/webhooks/{made['id']}", json={"url": url}),
    ):
        problem = assert_problem(response, 422)
        assert [e["field"] for e in problem["errors"]] == ["url"], problem
        assert message in problem["errors"][0]["message"], problem
    assert {w["url"] for w in client.get("/v1/webhooks").json()["data"]} == {PUBLIC_URL}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": PUBLIC_URL, "events": ["job.exploded"]}, "events.0"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL}, "events"),
        ({"events": ["job.failed"]}, "url"),
        ({"url": PUBLIC_URL + "\x00", "events": ["job.failed"]}, "url"),
        ({"url": PUBLIC_URL, "events": ["job.failed"], "secret": "whsec_mine"}, "secret"),
    ],
)
def test_a_malformed_webhook_is_a_422_naming_the_field(client, body, field):
    problem = assert_problem(client.post("/v1/webhooks", json=body), 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem


# The outbox


def _deliveries(client, webhook_id: str) -> list[dict]:
    return client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["data"]


def test_an_event_is_written_with_its_change_for_each_subscribed_enabled_endpoint(app, client):
    def make(events: list[str]) -> str:
        return client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": events}).json()["id"]

    wants_cancels, wants_successes, disabled = (
        make(["job.cancelled", "job.failed"]),
        make(["job.succeeded"]),
        make(["job.cancelled"]),
    )
    client.patch(f"/v1/webhooks/{disabled}", json={"enabled": False})
    with TestClient(app, headers=new_tenant().headers) as stranger:
        theirs = stranger.post(
            "/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.cancelled"]}
        )
        job = client.post("/v1/jobs", json=DIGITS_CNN).json()
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert _deliveries(stranger, theirs.json()["id"]) == []
    (delivery,) = _deliveries(client, wants_cancels)
    assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == (
        "job.cancelled",
        "pending",
        0,
    )
    assert delivery["attempt_log"] == [] and delivery["next_attempt_at"] is not None
    assert _deliveries(client, wants_successes) == _deliveries(client, disabled) == []
    with session_scope() as session:
        event = session.get(WebhookEvent, delivery["event_id"])
        assert event.payload["type"] == "job.cancelled"
        assert event.payload["data"]["id"] == job["id"]
        assert event.payload["data"]["status"] == "cancelled"
        assert datetime.fromisoformat(event.payload["timestamp"]) == event.created_at


def test_a_paused_job_tells_of_its_pause_once_and_its_resume_does_not(client):
    hook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.paused"]})
    job = client.post("/v1/jobs", json=DIGITS_CNN).json()
    assert client.post(f"/v1/jobs/{job['id']}/pause").json()["status"] == "paused"
    assert client.post(f"/v1/jobs/{job['id']}/pause").json()["status"] == "paused"  # as it was
    assert client.post(f"/v1/jobs/{job['id']}/resume").json()["status"] == "queued"
    (delivery,) = _deliveries(client, hook.json()["id"])
    assert delivery["event_type"] == "job.paused"
    with session_scope() as session:
        assert session.get(WebhookEvent, delivery["event_id"]).payload["data"]["id"] == job["id"]


def test_each_move_of_an_alias_tells_where_from_and_to(client):
    hook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["model.alias_moved"]})
    model_id = import_model(client, weights(network())).json()["id"]
    assert client.post(
        "/v1/registered-models/churn/versions", json={"model_id": model_id}
    ).is_success
    alias = "/v1/registered-models/churn/aliases/production"
    assert client.put(alias, json={"version": 1}).status_code == 200
    assert client.put(alias, json={"version": 1}).status_code == 200  # no move: no event
    assert client.delete(alias).status_code == 204
    deliveries = _deliveries(client, hook.json()["id"])
    with session_scope() as session:
        told = [session.get(WebhookEvent, d["event_id"]).payload["data"] for d in deliveries]
    moves = sorted((d["from_version"] or 0, d["to_version"] or 0, d["model_id"]) for d in told)
    assert moves == [(0, 1, model_id), (1, 0, None)]
    assert {(d["name"], d["alias"]) for d in told} == {("churn", "production")}


def test_a_cancelled_sweep_tells_of_itself_and_of_its_trials(client):
    events = ["sweep.cancelled", "job.cancelled"]
    webhook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": events}).json()
    sweep = client.post("/v1/sweeps", json=SWEEP)
    assert sweep.status_code == 201, sweep.text
    assert client.post(f"/v1/sweeps/{sweep.json()['id']}/cancel").status_code == 200
    trials = client.get(f"/v1/sweeps/{sweep.json()['id']}/trials").json()["data"]
    with session_scope() as session:
        told = {
            (event.type, event.payload["data"]["id"])
            for event in session.scalars(
                select(WebhookEvent)
                .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
                .where(WebhookDelivery.endpoint_id == webhook["id"])
            )
        }
    assert told == {("sweep.cancelled", sweep.json()["id"])} | {
        ("job.cancelled", trial["job_id"]) for trial in trials if trial["job_id"]
    }
    assert len(told) > 1, "the sweep had started trials"


def test_a_sweep_that_ran_its_trials_tells_of_its_end(client):
    webhook = client.post(
        "/v1/webhooks", json={"url": PUBLIC_URL, "events": ["sweep.succeeded"]}
    ).json()
    body = with_(sampler={"name": "random", "seed": 0}, max_trials=1, max_parallel_trials=1)
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    (trial,) = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    with session_scope() as session:  # as a worker records a success
        session.execute(
            update(Job)
            .where(Job.id == trial["job_id"])
            .values(status="succeeded", metrics={"validation_accuracy": 0.8})
        )
    assert _deliveries(client, webhook["id"]) == []
    sweeps.advance(sweep_id)
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "succeeded"
    (delivery,) = _deliveries(client, webhook["id"])
    assert delivery["event_type"] == "sweep.succeeded"
    with session_scope() as session:
        data = session.get(WebhookEvent, delivery["event_id"]).payload["data"]
    assert data == {"id": sweep_id, "name": SWEEP["name"], "status": "succeeded"}
    sweeps.advance(sweep_id)  # another pass over the ended sweep tells nothing more
    assert len(_deliveries(client, webhook["id"])) == 1


def test_a_ping_is_logged_and_a_redelivery_brings_it_forward(client):
    webhook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.failed"]}).json()
    pinged = client.post(f"/v1/webhooks/{webhook['id']}/ping")
    assert pinged.status_code == 202, pinged.text
    delivery = pinged.json()
    assert (delivery["event_type"], delivery["status"], delivery["webhook_id"]) == (
        "webhook.ping",
        "pending",
        webhook["id"],
    )
    assert _deliveries(client, webhook["id"]) == [delivery]
    with session_scope() as session:  # as if it waited for a retry hours away
        row = session.get(WebhookDelivery, delivery["id"])
        row.next_attempt_at = utcnow() + timedelta(hours=3)
    before = utcnow()
    again = client.post(f"/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202, again.text
    assert datetime.fromisoformat(again.json()["next_attempt_at"]) <= utcnow()
    assert datetime.fromisoformat(again.json()["next_attempt_at"]) >= before
    assert again.json()["event_id"] == delivery["event_id"]
    # Another endpoint's delivery, or none, through this endpoint: not found.
    other = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.failed"]}).json()
    assert_problem(
        client.post(f"/v1/webhooks/{other['id']}/deliveries/{delivery['id']}/redeliver"), 404
    )
    with session_scope() as session:
        assert (
            session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == other["id"])
            ).all()
            == []
        )


def test_an_outcome_is_recorded_only_by_its_claim_and_retried_until_the_day_is_over(client):
    webhook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.failed"]}).json()
    soon, late = (client.post(f"/v1/webhooks/{webhook['id']}/ping").json() for _ in range(2))
    now = utcnow()
    with session_scope() as session:  # as claim_due leaves them: attempt 1 under way
        for delivery, retry_until in ((soon, now + timedelta(hours=1)), (late, now)):
            row = session.get(WebhookDelivery, delivery["id"])
            row.attempts, row.retry_until = 1, retry_until
            row.lease_expires_at = now + timedelta(seconds=20)

    def outcome(delivery: dict, attempt: int) -> webhook_delivery.Outcome:
        claim = webhook_delivery.Claim(
            delivery["id"], attempt, PUBLIC_URL, SECRET, delivery["event_id"], {}
        )
        return webhook_delivery.Outcome(claim, now, 12.5, 500, "answered 500")

    with session_scope() as session:
        webhook_delivery.record(session, outcome(soon, attempt=0))  # a lapsed claim's: ignored
    assert [d["attempt_log"] for d in _deliveries(client, webhook["id"])] == [[], []]
    with session_scope() as session:
        for delivery in (soon, late):
            webhook_delivery.record(session, outcome(delivery, attempt=1))
    by_id = {d["id"]: d for d in _deliveries(client, webhook["id"])}
    retried, failed = by_id[soon["id"]], by_id[late["id"]]
    first = get_settings().webhook_retry_first_seconds
    wait = datetime.fromisoformat(retried["next_attempt_at"]) - now
    assert retried["status"] == "pending"
    assert timedelta(seconds=0.8 * first) <= wait <= timedelta(seconds=1.2 * first + 5)
    assert (failed["status"], failed["next_attempt_at"]) == ("failed", None)
    assert failed["finished_at"] is not None
    for delivery in (retried, failed):
        assert (delivery["last_response_status"], delivery["last_error"]) == (500, "answered 500")
        (logged,) = delivery["attempt_log"]
        assert (logged["number"], logged["response_status"]) == (1, 500)
        assert logged["duration_ms"] == 12.5
    with session_scope() as session:
        assert session.get(WebhookDelivery, soon["id"]).lease_expires_at is None


def test_events_past_the_logs_retention_are_forgotten_unless_still_retried(client):
    webhook = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["job.failed"]}).json()
    old_done, old_pending, recent_done = (
        client.post(f"/v1/webhooks/{webhook['id']}/ping").json() for _ in range(3)
    )
    long_ago = utcnow() - timedelta(days=get_settings().webhook_log_days, minutes=1)
    with session_scope() as session:
        for delivery, created_at, status in (
            (old_done, long_ago, "succeeded"),
            (old_pending, long_ago, "pending"),
            (recent_done, utcnow(), "failed"),
        ):
            session.get(WebhookEvent, delivery["event_id"]).created_at = created_at
            session.get(WebhookDelivery, delivery["id"]).status = status
            session.add(
                WebhookAttempt(
                    delivery_id=delivery["id"], number=1, response_status=500,
                    error="answered 500", duration_ms=1.0, time=created_at,
                )
            )  # fmt: skip
    with session_scope() as session:
        assert webhooks.forget_old(session, utcnow()) == 1
    kept = {d["id"] for d in _deliveries(client, webhook["id"])}
    assert kept == {old_pending["id"], recent_done["id"]}
    with session_scope() as session:
        assert session.get(WebhookEvent, old_done["event_id"]) is None
        attempts = select(WebhookAttempt).where(WebhookAttempt.delivery_id == old_done["id"])
        assert session.scalars(attempts).all() == []


# Single attempts against a real receiver


SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _claim(url: str) -> webhook_delivery.Claim:
    payload = {"type": "webhook.ping", "timestamp": utcnow().isoformat(), "data": {"n": 1}}
    return webhook_delivery.Claim("whd_test", 1, url, SECRET, "msg_test", payload)


def _attempt(url: str) -> webhook_delivery.Outcome:
    async def run() -> webhook_delivery.Outcome:
        async with webhook_delivery.new_client() as client:
            return await webhook_delivery.attempt(client, _claim(url))

    return asyncio.run(run())


def test_an_attempt_is_signed_and_sent_to_the_checked_address_named_as_the_url_does(
    tmp_path, configured
):
    configured(TUNERY_WEBHOOK_ALLOW="127.0.0.0/8,::1/128")
    with receiver(tmp_path) as running:
        running.secret_file.write_text(SECRET)
        for host in ("127.0.0.1", "localhost"):
            outcome = _attempt(running.url(host=host))
            assert (outcome.response_status, outcome.error) == (204, None)
            assert outcome.duration_ms > 0
        by_ip, by_name = running.received()
    assert by_ip["verified"] and by_name["verified"]
    assert by_ip["id"] == by_name["id"] == "msg_test"
    assert by_ip["payload"]["data"] == {"n": 1}
    assert by_ip["host"] == f"127.0.0.1:{running.port}"
    assert by_name["host"] == f"localhost:{running.port}"  # the name, not the address


def test_an_attempt_follows_no_redirect_and_gives_up_at_the_timeout(tmp_path, configured):
    configured(TUNERY_WEBHOOK_ALLOW="127.0.0.0/8", TUNERY_WEBHOOK_TIMEOUT_SECONDS="1")
    with receiver(tmp_path) as running:
        running.secret_file.write_text(SECRET)
        redirected = _attempt(running.url("/redirect"))
        assert (redirected.response_status, redirected.error) == (307, "answered 307")
        slow = _attempt(running.url("/slow"))
        assert (slow.response_status, slow.error) == (None, "no answer within 1 s")
        assert 900 < slow.duration_ms < 2500
        assert [r["path"] for r in running.received()] == ["/redirect", "/slow"]  # no /landing


def test_an_attempt_to_a_name_that_now_resolves_to_a_private_address_sends_nothing(
    tmp_path, configured
):
    """The webhook was made for a public address; its name now resolves to loopback (DNS
    rebinding, or a changed record): checked again at the attempt, it is refused."""
    configured(TUNERY_WEBHOOK_ALLOW="")
    with receiver(tmp_path) as running:
        running.secret_file.write_text(SECRET)
        for url in (running.url(host="localhost"), running.url(host="127.0.0.1")):
            outcome = _attempt(url)
            assert outcome.response_status is None
            assert outcome.error.startswith("refused: ") and "not a public address" in outcome.error
        assert running.received() == []


# An attempt in a process of its own: the system's certificate authorities are read once, when
# the sending module is imported, and this one has its own (SSL_CERT_FILE).
ATTEMPT = """
import asyncio, json, sys
from app.services import webhook_delivery

payload = {"type": "webhook.ping", "data": {}}
claim = webhook_delivery.Claim("whd_test", 1, sys.argv[1], sys.argv[2], "msg_tls", payload)

async def attempt():
    async with webhook_delivery.new_client() as client:
        return await webhook_delivery.attempt(client, claim)

outcome = asyncio.run(attempt())
print(json.dumps([outcome.response_status, outcome.error]))
"""


def test_an_https_attempt_connects_to_the_address_with_tls_to_the_name(tmp_path):
    certificate, key = self_signed(tmp_path, "localhost")
    env = {**os.environ, "SSL_CERT_FILE": str(certificate), "TUNERY_WEBHOOK_ALLOW": "127.0.0.0/8"}

    def attempt(url: str) -> list:
        done = subprocess.run(
            [sys.executable, "-c", ATTEMPT, url, SECRET], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    with receiver(tmp_path, tls=(certificate, key)) as running:
        running.secret_file.write_text(SECRET)
        # Sent to 127.0.0.1, the certificate checked against the name: it is localhost's.
        assert attempt(running.url(host="localhost")) == [204, None]
        (received,) = running.received()
        assert received["verified"] and received["host"] == f"localhost:{running.port}"
        # By the address, the same certificate does not do: it names localhost, not 127.0.0.1.
        status, error = attempt(running.url(host="127.0.0.1"))
        assert status is None and "CERTIFICATE_VERIFY_FAILED" in error, error
        assert len(running.received()) == 1
