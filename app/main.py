"""The FastAPI application: `uvicorn app.main:app`."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app import docs, problems
from app.api import (
    datasets,
    health,
    jobs,
    models,
    openai_chat,
    openai_files,
    openai_fine_tuning,
    registered_models,
    spec_catalog,
    sweeps,
    webhooks,
)
from app.config import get_settings
from app.db import make_read_engine
from app.limits import BodySizeLimit, NulFreeUrl
from app.observability import metrics
from app.observability.logs import configure_logging
from app.security import ApiKeyAuth, SecurityHeaders
from app.services.reconciler import reconcile_forever
from app.services.webhook_delivery import deliver_forever

UI_DIR = Path(__file__).parent / "ui"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Made here, on the server's event loop, which its connections belong to.
    app.state.read_engine = make_read_engine(settings.database_url)
    loops = [
        asyncio.create_task(loop(interval))
        for loop, interval in (
            (reconcile_forever, settings.reconcile_interval_seconds),
            (deliver_forever, settings.webhook_poll_seconds),  # webhooks: why here, in its doc
        )
        if interval > 0
    ]
    yield
    for loop in loops:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    await app.state.read_engine.dispose()


def create_app() -> FastAPI:
    settings = get_settings()
    # Here rather than in the lifespan: uvicorn logs "Started server process" between importing
    # the app and starting it, and that line should be in the same format as the rest.
    configure_logging(settings.log_format)
    app = FastAPI(
        title="tunery",
        version="0.1.0",
        summary="Pretrain, fine-tune and domain-adapt PyTorch models over HTTP.",
        lifespan=lifespan,
        # Ours instead, from assets served here: FastAPI's load them from a CDN (app/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.state.metrics = metrics.Metrics(settings)
    # Outermost last: headers on every answer, CORS preflights (only if origins are
    # configured) before the key check, and no body is read for a request without a key.
    app.add_middleware(NulFreeUrl)
    app.add_middleware(
        BodySizeLimit,
        upload_bytes=settings.max_upload_bytes,
        request_bytes=settings.max_request_bytes,
    )
    app.add_middleware(ApiKeyAuth, rate_limit_storage_url=settings.rate_limit_storage_url)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(SecurityHeaders)
    # Outermost of all: it times every answer, the ones refused for a key or a size too.
    app.add_middleware(metrics.RequestMetrics, histogram=app.state.metrics.requests)
    # Requests are matched against routers in this order: the most read come first.
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.include_router(sweeps.router)
    app.include_router(webhooks.router)
    app.include_router(registered_models.router)
    app.include_router(spec_catalog.router)
    app.include_router(openai_chat.router)
    app.include_router(openai_files.router)
    app.include_router(openai_fine_tuning.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    # The dashboard: static files calling /v1 with the key the user gives it; no build step.
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    docs.install(app)
    return app


app = create_app()
# The API imports torch and its model code: some 300,000 long-lived objects that every full
# garbage collection would walk again (200-300 ms, the p99 of a job read; bench/api.py). Frozen,
# the collector leaves them alone.
gc.freeze()
