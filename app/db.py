"""The database engine and sessions. SQLite gets WAL and a busy timeout: API and worker share it.

SQLite transactions begin IMMEDIATE, taking the write lock up front. A deferred transaction
that reads (say, counting a tenant's queued jobs) and then writes fails at once with "database
is locked" when another connection wrote in between, whatever the busy timeout; an immediate
one waits its turn instead. pysqlite's own BEGIN is switched off so ours is the only one."""

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

# As many kept connections as anyio has threads for sync routes and dependencies (40), since
# each may hold one; a few more for the other thread pool (`asyncio.to_thread`). With
# SQLAlchemy's default (5 kept, 10 more opened and closed as needed), 32 concurrent clients
# made the API open a new Postgres connection (a server process forked) every sixth request.
# The async engine of the API's reads (`make_read_engine`) has a pool of the same size.
# Connections open only as concurrency calls for them; Postgres' `max_connections` must
# allow 100 per API process for both pools at full concurrency.
POSTGRES_POOL_SIZE = 40
POSTGRES_MAX_OVERFLOW = 10


def _wait_for_writers(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _configure_sqlite(dbapi_connection, record) -> None:
    _wait_for_writers(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    dbapi_connection.isolation_level = None


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
    )


@cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with get_sessionmaker()() as session, session.begin():
        yield session


Read = TypeVar("Read")


def make_read_engine(url: str) -> AsyncEngine:
    """The engine of the API's reads (`GET` of jobs): async, so that a read costs no trip to
    the thread pool, which with the sync session's work doubled a job read's CPU
    (docs/PERFORMANCE.md). On Postgres in autocommit: a statement sees one snapshot on its
    own, and BEGIN and COMMIT would be two more round trips. No ping before each checkout
    (another round trip per read): `read` tries again when a connection turns out dead."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://", 1))
        event.listen(engine.sync_engine, "connect", _wait_for_writers)
        return engine
    return create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
    )


async def read(engine: AsyncEngine, run: Callable[[AsyncSession], Awaitable[Read]]) -> Read:
    """`run` in a session of its own; once more if its connection was found dead (the
    database restarted): a read may be repeated, and by then the pool has let go of every
    connection opened before the failure."""
    try:
        return await _in_session(engine, run)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return await _in_session(engine, run)


async def _in_session(engine: AsyncEngine, run: Callable[[AsyncSession], Awaitable[Read]]) -> Read:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        return await run(session)
