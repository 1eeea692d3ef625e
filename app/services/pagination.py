"""Keyset pagination over (created_at, id), newest first, with opaque cursors."""

import base64
import json
from datetime import datetime

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from app.problems import InvalidInput
from worker.core.validation import SpecIssue


def _encode(created_at: datetime, id_: str) -> str:
    raw = json.dumps([created_at.isoformat(), id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_ = json.loads(raw)
        return datetime.fromisoformat(created_at), str(id_)
    except (ValueError, TypeError) as error:
        raise InvalidInput([SpecIssue("cursor", "not a cursor this API returned")]) from error


def newest_first(session: Session, stmt: Select, entity, limit: int, cursor: str | None):
    """One page of `entity` rows and the cursor of the next page (None at the end)."""
    if cursor is not None:
        created_at, id_ = _decode(cursor)
        stmt = stmt.where(
            or_(
                entity.created_at < created_at,
                and_(entity.created_at == created_at, entity.id < id_),
            )
        )
    stmt = stmt.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(last.created_at, last.id)
