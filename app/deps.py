"""Request-scoped dependencies."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.services import idempotency
from app.services.auth import Caller


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with get_sessionmaker()() as session, session.begin():
        yield session


# "function" scope: the transaction commits before the response is sent, so a client that
# reads back what it just created finds it (the default ends it after the response).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

# Declares the scheme in the OpenAPI document; the key itself is checked by
# `app.security.ApiKeyAuth` before the request reaches a route.
_bearer = HTTPBearer(auto_error=False, description="An API key from `tunery admin create-key`.")


# Async, though it does no I/O: a plain `def` dependency would cost each request a trip to the
# thread pool (60-120 us of CPU here, where a whole `GET /v1/jobs/{id}` costs 700-900).
async def get_caller(
    request: Request, _key: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return request.state.caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_read_engine(request: Request) -> AsyncEngine:
    """The engine of async reads (`app.db.make_read_engine`), made with the app's lifespan."""
    return request.app.state.read_engine


ReadEngineDep = Annotated[AsyncEngine, Depends(get_read_engine)]


# The `Idempotency-Key` of a creating request (`app.services.idempotency`).
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=200,
        description="A replay with the same key and request returns the first answer.",
    ),
]
