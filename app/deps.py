"""Request-scoped dependencies."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.services.auth import Caller


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with get_sessionmaker()() as session, session.begin():
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

# Declares the scheme in the OpenAPI document; the key itself is checked by
# `app.security.ApiKeyAuth` before the request reaches a route.
_bearer = HTTPBearer(auto_error=False, description="An API key from `tunery admin create-key`.")


def get_caller(
    request: Request, _key: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return request.state.caller


CallerDep = Annotated[Caller, Depends(get_caller)]
