"""The database engine and sessions. SQLite gets WAL and a busy timeout: API and worker share it.

SQLite transactions begin IMMEDIATE, taking the write lock up front. A deferred transaction
that reads (say, counting a tenant's queued jobs) and then writes fails at once with "database
is locked" when another connection wrote in between, whatever the busy timeout; an immediate
one waits its turn instead. pysqlite's own BEGIN is switched off so ours is the only one."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

# As many kept connections as anyio has threads for sync routes and dependencies (40), since
# each may hold one; a few more for the other thread pool (`asyncio.to_thread`). With
# SQLAlchemy's default (5 kept, 10 more opened and closed as needed), 32 concurrent clients
# made the API open a new Postgres connection (a server process forked) every sixth request.
# Connections open only as concurrency calls for them; Postgres' `max_connections` must
# allow 50 per API process.
POSTGRES_POOL_SIZE = 40
POSTGRES_MAX_OVERFLOW = 10


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
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


@cache
def get_read_sessionmaker() -> sessionmaker[Session]:
    """Sessions for reads of one statement. On Postgres they run in autocommit: a statement
    sees one snapshot on its own, and BEGIN and COMMIT would be two more round trips, as many
    as the query itself. SQLite keeps its transactions: its driver's autocommit switch would
    hand BEGIN back to pysqlite (see above)."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def read_scope() -> Iterator[Session]:
    """A session for a request that only reads, one statement at a time."""
    with get_read_sessionmaker()() as session:
        yield session
