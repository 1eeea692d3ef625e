"""Keyset pagination over (created_at, id), newest first, with opaque cursors.

A page is found by its position, never by counting rows: the cursor holds the (created_at, id)
of the last row sent, and the next page starts right after it in an index on (tenant_id,
created_at, id), so the thousandth page costs what the first does, where OFFSET reads and
throws away every row before the page."""

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from app.problems import InvalidInput
from trainer.spec import SpecIssue


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


def page_query(stmt: Select, entity: Any, limit: int, cursor: str | None) -> Select:
    """`stmt` narrowed to the page after `cursor`, newest first, with one row more than
    `limit`: that row says whether there is a next page."""
    if cursor is not None:
        # A row value, not `created_at < c OR (created_at = c AND id < i)`: Postgres starts an
        # index scan at a row comparison, while the OR becomes two scans whose rows are sorted.
        stmt = stmt.where(tuple_(entity.created_at, entity.id) < _decode(cursor))
    return stmt.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1)


def page(session: Session, query: Select, limit: int) -> tuple[list[Any], str | None]:
    """The rows of a `page_query` and the cursor of the next page (None at the end)."""
    return page_of(list(session.scalars(query)), limit)


def page_of(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The page in the rows a `page_query` read, and the cursor of the next (None at the end)."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(last.created_at, last.id)


def newest_first(
    session: Session, stmt: Select, entity: Any, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of `entity` rows and the cursor of the next page (None at the end)."""
    return page(session, page_query(stmt, entity, limit, cursor), limit)
