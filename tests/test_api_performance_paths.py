"""What keeps the read path fast, checked as behaviour on Postgres (the timings are in
`bench/api.py`): a job read is one SELECT outside any transaction, listing pages start at the
cursor in the listing index, and a key that misses the cache is looked up once however many
requests wait for it."""

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert

from tests.conftest import new_tenant

# Sorted as the API sorts, newest first: hex ids order the same under any collation.
NEWEST_FIRST = {"key": lambda row: (row["created_at"], row["id"]), "reverse": True}


@pytest.fixture(scope="module")
def client(api_database):
    from app.main import app

    with TestClient(app) as test_client:
        yield test_client


@contextlib.contextmanager
def statements(engine=None) -> Iterator[list[tuple[str, str]]]:
    """The SQL an engine of the API (by default, that of its sync sessions) sends meanwhile,
    each statement with the connection's transaction status right after it ran (`IDLE`: no
    transaction was open)."""
    from app.db import get_engine

    engine, ran = engine or get_engine(), []

    def record(connection, _cursor, statement, _parameters, _context, _executemany) -> None:
        status = connection.connection.driver_connection.info.transaction_status
        ran.append((statement, status.name))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield ran
    finally:
        event.remove(engine, "after_cursor_execute", record)


def insert_jobs(tenant_id: str, count: int, per_instant: int) -> list[dict]:
    """`count` jobs, queued and succeeded in turn, `per_instant` of them created at each
    instant (as a batch submitted at once would be), in one statement."""
    from app.db import session_scope
    from app.models import Job, new_id

    start = datetime.now(UTC)
    rows = [
        {
            "id": new_id("job"),
            "tenant_id": tenant_id,
            "kind": "finetune",
            "status": ("queued", "succeeded")[i % 2],
            "spec": {"kind": "finetune"},
            "max_attempts": 3,
            "created_at": start - timedelta(seconds=i // per_instant),
        }
        for i in range(count)
    ]
    with session_scope() as session:
        session.execute(insert(Job), rows)
    return rows


def walk(client: TestClient, headers: dict[str, str], limit: int, **filters: str) -> list[str]:
    seen, cursor = [], None
    while True:
        params = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/jobs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= limit
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def read_with_a_known_key(client: TestClient, path: str, headers: dict[str, str]):
    """The statements of a request sent right after one that put its key in the cache, on
    either engine (the key lookup's or the reads'). The cache keeps a key half a second in
    tests: a machine that stalls longer between the two requests gets another try."""
    reads = client.app.state.read_engine.sync_engine
    for _ in range(5):
        client.get(path, headers=headers)
        with statements() as looked_up, statements(reads) as ran:
            response = client.get(path, headers=headers)
        if not looked_up:
            break
    return response, looked_up + ran


@pytest.mark.parametrize("which", ["own job", "another tenant's job", "listing page"])
def test_a_read_is_one_select_outside_a_transaction_once_the_key_is_cached(client, which):
    owner, other = new_tenant(), new_tenant()
    rows = insert_jobs(owner.tenant_id, 3, per_instant=1)
    job_id = rows[0]["id"]
    caller = other if which == "another tenant's job" else owner
    path = "/v1/jobs?limit=2" if which == "listing page" else f"/v1/jobs/{job_id}"

    response, ran = read_with_a_known_key(client, path, caller.headers)

    if which == "own job":
        assert response.status_code == 200 and response.json()["id"] == job_id
    elif which == "another tenant's job":
        assert response.status_code == 404
    else:
        expected = [row["id"] for row in sorted(rows, **NEWEST_FIRST)][:2]
        assert [job["id"] for job in response.json()["data"]] == expected
    assert len(ran) == 1, ran
    statement, transaction = ran[0]
    assert statement.lstrip().startswith("SELECT") and "FROM jobs" in statement
    assert "jobs.tenant_id = " in statement
    if which != "listing page":
        assert "jobs.id = " in statement
    # Autocommit: no BEGIN went before it and no COMMIT follows, two round trips saved.
    assert transaction == "IDLE"


def test_pages_give_every_job_exactly_once_newest_first_across_ties(client):
    tenant = new_tenant()
    rows = insert_jobs(tenant.tenant_id, 250, per_instant=4)
    newest_first = [row["id"] for row in sorted(rows, **NEWEST_FIRST)]

    # 7 a page, so that pages end inside groups of jobs created at the same instant.
    assert walk(client, tenant.headers, limit=7) == newest_first
    queued = [row["id"] for row in sorted(rows, **NEWEST_FIRST) if row["status"] == "queued"]
    assert walk(client, tenant.headers, limit=6, status="queued") == queued
    assert walk(client, tenant.headers, limit=1000) == newest_first


@pytest.mark.parametrize(
    ("status", "index"),
    [(None, "ix_jobs_tenant_created_at_id"), ("queued", "ix_jobs_tenant_status_created_at_id")],
    ids=["all jobs", "one status"],
)
def test_a_deep_page_is_read_from_the_listing_index_starting_at_the_cursor(client, status, index):
    from app.db import get_engine
    from app.services import jobs

    tenant = new_tenant()
    insert_jobs(tenant.tenant_id, 600, per_instant=4)
    cursor = None
    for _ in range(4):
        params = {"limit": 50} | ({"cursor": cursor} if cursor else {})
        params |= {"status": status} if status else {}
        cursor = client.get("/v1/jobs", params=params, headers=tenant.headers).json()["next_cursor"]
    query = jobs.list_query(tenant.tenant_id, status, None, 50, cursor)

    with get_engine().begin() as connection:
        connection.exec_driver_sql(
            "ANALYZE jobs"
        )  # the planner's row counts, as autovacuum keeps them
        # Whether the index can serve the query in order from the cursor on, not what the
        # planner prefers for a table this small: reading all of the tenant's few rows and
        # sorting them would be as cheap here (with 10,000 jobs it picks the index itself).
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        compiled = query.compile(dialect=connection.dialect)
        plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars().all()

    text = "\n".join(plan)
    assert f"Index Scan Backward using {index} on jobs" in text, text
    (index_condition,) = [line for line in plan if "Index Cond:" in line]
    # The cursor is where the scan starts, not a filter on every row before it, and the
    # index gives the order: nothing is sorted.
    assert "tenant_id" in index_condition and "ROW(created_at" in index_condition, text
    assert "Filter:" not in text and "Sort" not in text, text


@pytest.mark.parametrize("known", [True, False], ids=["valid key", "unknown key"])
def test_concurrent_lookups_of_an_uncached_key_share_one_query(api_database, known):
    from app.services import auth

    tenant = new_tenant()
    secret = tenant.secret if known else auth.new_secret()
    threads = 8
    start = threading.Barrier(threads)

    def authenticate(_: int) -> auth.Caller | None:
        start.wait()
        return auth.authenticate(secret)

    with statements() as ran, ThreadPoolExecutor(threads) as pool:
        callers = list(pool.map(authenticate, range(threads)))

    assert {caller.tenant_id if caller else None for caller in callers} == {
        tenant.tenant_id if known else None
    }
    assert len([statement for statement, _ in ran if "api_keys" in statement]) == 1, ran


def test_a_read_after_the_database_dropped_its_connections_is_answered(client):
    """No ping before each checkout: a read whose pooled connection died (Postgres restarted,
    or ended it) is tried once more on a new one, and the client sees only the answer."""
    from app.db import get_engine

    tenant = new_tenant()
    job_id = insert_jobs(tenant.tenant_id, 1, per_instant=1)[0]["id"]
    path = f"/v1/jobs/{job_id}"
    assert client.get(path, headers=tenant.headers).status_code == 200  # a pooled connection
    reads = client.app.state.read_engine.sync_engine
    with get_engine().connect() as admin:
        ended = admin.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar()
    assert ended >= 1

    with statements(reads) as ran:
        response = client.get(path, headers=tenant.headers)

    assert response.status_code == 200 and response.json()["id"] == job_id
    assert len(ran) == 1, ran  # the dead connection's statement failed before running
