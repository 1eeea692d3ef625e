"""`Idempotency-Key` on creating requests: the first request with a key creates, a replay
with the same request gets the first answer again, and the same key with another request is
refused. The key is recorded in the same transaction as what it created, so concurrent
duplicates create one resource: the losers' inserts collide on the key and read the winner's
answer instead."""

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import IdempotencyKey
from app.problems import InvalidInput
from trainer.spec import SpecIssue

HEADER = "Idempotency-Key"


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _replay(stored: IdempotencyKey, print_: str) -> tuple[dict, bool]:
    if stored.fingerprint != print_:
        message = "was first used with a different request; use a new key for a new request"
        raise InvalidInput([SpecIssue(HEADER, message)])
    return stored.response, False


def once(
    session: Session, route: str, key: str | None, print_: str, create: Callable[[], BaseModel]
) -> tuple[dict, bool]:
    """The answer to the request, and whether this call created it (False: a replay)."""
    if key is None:
        return create().model_dump(mode="json"), True
    stored = session.get(IdempotencyKey, (route, key))
    if stored is not None:
        return _replay(stored, print_)
    try:
        with session.begin_nested():
            response = create().model_dump(mode="json")
            session.add(
                IdempotencyKey(
                    route=route, key=key, fingerprint=print_, status_code=201, response=response
                )
            )
    except IntegrityError:  # a concurrent request with this key committed first
        stored = session.get(IdempotencyKey, (route, key), populate_existing=True)
        return _replay(stored, print_)
    return response, True
