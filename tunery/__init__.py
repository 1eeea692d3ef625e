"""The tunery Python SDK and `tunery` command.

    from tunery import Client

    with Client() as client:  # TUNERY_URL, TUNERY_API_KEY
        job = client.jobs.wait(client.jobs.create(spec).id)

See docs/SDK.md.
"""

from tunery._core import RetryPolicy
from tunery.client import AsyncClient, Client
from tunery.errors import (
    APIConnectionError,
    APIError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TuneryError,
    Unauthorized,
    WaitTimeout,
)
from tunery.types import (
    Dataset,
    Event,
    Job,
    MetricPoint,
    Model,
    Prediction,
    RegisteredModel,
    StreamEvent,
    Sweep,
    SweepEvent,
    Trial,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "Client",
    "Conflict",
    "Dataset",
    "Event",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "MetricPoint",
    "Model",
    "NotFound",
    "Prediction",
    "RateLimited",
    "RegisteredModel",
    "RetryPolicy",
    "ServerError",
    "StreamEvent",
    "Sweep",
    "SweepEvent",
    "Trial",
    "TuneryError",
    "Unauthorized",
    "WaitTimeout",
]
