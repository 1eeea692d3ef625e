"""Prometheus metrics, served at `GET /metrics` (no API key: it names no tenant).

What the database knows (jobs by status, the queue, job durations) is read at scrape time,
whichever worker ran the job: every API process reports the same jobs by status. Request
latencies are recorded as requests are served, in the process that serves them: with several
uvicorn worker processes each has its own histogram and a scrape sees one process's share.
Scrape each process on its own, or run one process per container; prometheus_client's
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`) is the way to merge them, and is not set up.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import get_args

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response
from optuna.storages._rdb.models import TrialModel as OptunaTrial
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.db import get_engine
from app.models import Job, Sweep, utcnow
from app.schemas import SweepStatus, TrialState
from app.services.job_state import ACTIVE, TERMINAL
from app.services.sweeps import STATE_NAMES

log = logging.getLogger(__name__)

JOB_STATUSES = (*ACTIVE, "paused", *TERMINAL)
# From a second to a day: a job is a quick fine-tune or a long pretraining.
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# prometheus_client's defaults, plus the slow ends of uploads and first predictions.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Anything else a client sends as a method would be a label value of its choosing.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class FinishedDurations:
    """A histogram of how long finished things (jobs, sweeps) ran, its counts only growing, fed
    at each scrape with those that finished since the previous one.

    They finish in worker processes that serve no metrics, and a histogram recomputed from "the
    last N hours" would shrink as they age out of the window, which Prometheus reads as a
    counter reset. Each scrape reads what finished within `lookback` (a result bounded by the
    window, however large the table) and observes what it has not seen; the window covers a
    commit that lands after a later one and a worker's clock a little behind ours, and needs a
    scrape at least that often. Like any counter, it starts at zero when the process starts:
    what finished before then is not counted. `finished_at` has no index: the query scans."""

    def __init__(
        self,
        histogram: Histogram,
        finished_since: Callable[[Connection, datetime], Iterable[tuple]],
        lookback: timedelta = timedelta(minutes=10),
    ) -> None:
        self.histogram = histogram
        self.finished_since = finished_since  # rows of (id, labels, started_at, finished_at)
        self.lookback = lookback
        self.started = utcnow()
        self.seen: dict[str, datetime] = {}  # id -> finished_at, within the lookback
        self.lock = threading.Lock()

    def observe(self, connection: Connection) -> None:
        with self.lock:
            horizon = max(self.started, utcnow() - self.lookback)
            for id_, labels, started_at, finished_at in self.finished_since(connection, horizon):
                if id_ not in self.seen:
                    seconds = max(0.0, (finished_at - started_at).total_seconds())
                    self.histogram.labels(*labels).observe(seconds)
                    self.seen[id_] = finished_at
            self.seen = {id_: at for id_, at in self.seen.items() if at > horizon}


def _jobs_finished_since(connection: Connection, horizon: datetime) -> Iterable[tuple]:
    rows = connection.execute(
        select(Job.id, Job.kind, Job.status, Job.started_at, Job.finished_at).where(
            Job.status.in_(TERMINAL), Job.finished_at > horizon, Job.started_at.is_not(None)
        )
    )
    return ((id_, (kind, status), start, end) for id_, kind, status, start, end in rows)


class JobCollector(Collector):
    """`tunery_jobs`, `tunery_queue_depth` and `tunery_job_duration_seconds`, from the database."""

    def __init__(self) -> None:
        self.durations = FinishedDurations(
            Histogram(
                "tunery_job_duration_seconds",
                "Run time of finished jobs (their last attempt's start to the end), by kind and "
                "final status, counted since this API process started.",
                ["kind", "status"],
                buckets=JOB_DURATION_BUCKETS,
                registry=None,
            ),
            _jobs_finished_since,
        )

    def collect(self) -> Iterable[Metric]:
        try:
            with get_engine().connect() as connection:
                counts = dict(
                    connection.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                )
                self.durations.observe(connection)
        except SQLAlchemyError as error:
            # Absent series say the database is unreachable; the request metrics still go out.
            log.warning("metrics: could not read jobs from the database: %s", error)
            return
        jobs = GaugeMetricFamily(
            "tunery_jobs", "Jobs by status, all tenants together.", labels=["status"]
        )
        for status in (*JOB_STATUSES, *sorted(set(counts) - set(JOB_STATUSES))):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "tunery_queue_depth",
            "Jobs queued and not yet running, all tenants together.",
            value=counts.get("queued", 0),
        )
        yield from self.durations.histogram.collect()


def _sweeps_finished_since(connection: Connection, horizon: datetime) -> Iterable[tuple]:
    rows = connection.execute(
        select(Sweep.id, Sweep.status, Sweep.created_at, Sweep.finished_at).where(
            Sweep.finished_at > horizon
        )
    )
    return ((id_, (status,), start, end) for id_, status, start, end in rows)


class SweepCollector(Collector):
    """`tunery_sweeps` by status, `tunery_sweep_trials` by state (from Optuna's tables: every
    study is a sweep's) and `tunery_sweep_duration_seconds`, from the database."""

    def __init__(self) -> None:
        self.durations = FinishedDurations(
            Histogram(
                "tunery_sweep_duration_seconds",
                "Time from a sweep's submission to its end, by final status, counted since this "
                "API process started.",
                ["status"],
                buckets=JOB_DURATION_BUCKETS,
                registry=None,
            ),
            _sweeps_finished_since,
        )

    def collect(self) -> Iterable[Metric]:
        try:
            with get_engine().connect() as connection:
                sweeps = dict(
                    connection.execute(
                        select(Sweep.status, func.count()).group_by(Sweep.status)
                    ).all()
                )
                trials = dict(
                    connection.execute(
                        select(OptunaTrial.state, func.count()).group_by(OptunaTrial.state)
                    ).all()
                )
                self.durations.observe(connection)
        except SQLAlchemyError as error:
            log.warning("metrics: could not read sweeps from the database: %s", error)
            return
        by_status = GaugeMetricFamily(
            "tunery_sweeps", "Sweeps by status, all tenants together.", labels=["status"]
        )
        for status in get_args(SweepStatus):
            by_status.add_metric([status], sweeps.get(status, 0))
        yield by_status
        by_state = GaugeMetricFamily(
            "tunery_sweep_trials", "Sweeps' trials by state, all sweeps together.", labels=["state"]
        )
        counted = Counter()
        for state, count in trials.items():
            counted[STATE_NAMES[state]] += count
        for state in get_args(TrialState):
            by_state.add_metric([state], counted[state])
        yield by_state
        yield from self.durations.histogram.collect()


class BrokerQueueCollector(Collector):
    """`tunery_broker_queue_length`: messages waiting in the Celery queue on Redis (LLEN).

    It differs from `tunery_queue_depth` when messages are lost (the reconciler re-sends them) or
    duplicated, or when queued jobs wait for a tenant's running-job slot."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        self.queue = queue

    def collect(self) -> Iterable[Metric]:
        try:
            length = self.client.llen(self.queue)
        except redis.RedisError as error:
            log.warning("metrics: could not read the broker's queue length: %s", error)
            return
        yield GaugeMetricFamily(
            "tunery_broker_queue_length",
            "Messages waiting in the broker's training queue.",
            value=length,
        )


class Metrics:
    """One app's registry: the request histogram it fills, and what is read at scrape time.

    A registry of its own rather than prometheus_client's global one, so that creating a
    second app (tests do) does not register the same names twice."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)
        self.registry.register(JobCollector())
        self.registry.register(SweepCollector())
        # Only Redis is cheap to ask; kombu's SQLAlchemy transport keeps messages in a table.
        if settings.broker_url.startswith(("redis://", "rediss://")):
            self.registry.register(BrokerQueueCollector(settings.broker_url, settings.queue))
        self.requests = Histogram(
            "tunery_http_request_duration_seconds",
            "HTTP requests by method, route template and status code, until the response "
            "was sent; this process only.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that served a request (`/v1/jobs/{job_id}`), never its path:
    ids in label values would make a new series per job. Read from the scope after routing,
    which records the route it chose; FastAPI's lazily included routers offer no public way to
    match a path before. `root_path` is the scope's before routing: a mount extends it.

    A request answered before routing (no API key, a rate limit, a body too large) or by no
    route is `unmatched`."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path_format", UNMATCHED)
    mounted_at = scope.get("root_path", "")
    if "endpoint" in scope and mounted_at != root_path:
        return f"{mounted_at.removeprefix(root_path)}/{{path}}"
    return UNMATCHED


class RequestMetrics:
    """Times every HTTP request into `tunery_http_request_duration_seconds`.

    Plain ASGI rather than BaseHTTPMiddleware, which would buffer streaming responses (server-
    sent events) and run the app in another task."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
        root_path = scope.get("root_path", "")
        status = 500  # what the server answers when the app raises before responding

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope, root_path)
            self.histogram.labels(method, route, str(status)).observe(elapsed)


router = APIRouter(tags=["observability"])


# Outside the OpenAPI document: it is for Prometheus, not part of the v1 contract.
@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
