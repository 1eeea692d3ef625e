"""OpenAI's paging of lists: `after` is the id of the last item of the previous page, and the
page says whether more follow (`has_more`), where tunery's own lists pass opaque cursors."""

from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from app.problems import InvalidInput
from trainer.spec import SpecIssue


def page_after(
    session: Session,
    query: Select,
    entity: Any,
    after_id: str | None,
    limit: int,
    newest_first: bool = True,
) -> tuple[list[Any], bool]:
    """Up to `limit` rows of `entity` that `query` selects, in (created_at, id) order, after the
    row `after_id` (one the same query selects: another tenant's is unknown); and whether more
    follow."""
    if after_id is not None:
        last = session.execute(
            query.with_only_columns(entity.created_at, entity.id).where(entity.id == after_id)
        ).one_or_none()
        if last is None:
            raise InvalidInput([SpecIssue("after", f"no item {after_id!r} in this list")])
        position = tuple_(entity.created_at, entity.id)
        query = query.where(position < tuple(last) if newest_first else position > tuple(last))
    columns = (entity.created_at, entity.id)
    query = query.order_by(*(column.desc() if newest_first else column for column in columns))
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
