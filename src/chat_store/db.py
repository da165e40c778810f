"""Engine and sessionmaker construction for both dialects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from chat_store.settings import Settings


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    url = url or settings.sqlalchemy_url
    kwargs: dict[str, Any] = {"echo": settings.db_echo}
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has a single writer, and queueing in the pool is cheaper and
        # more predictable than "database is locked" retries between several connections.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    kwargs["connect_args"] = dict(settings.sqlalchemy_connect_args)
    if settings.db_null_pool:
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_pre_ping=settings.db_pool_pre_ping,
        )
    return create_async_engine(url, **kwargs)


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # The sqlite3 module's own transaction handling breaks SAVEPOINT; SQLAlchemy's documented
    # recipe turns it off and emits BEGIN itself (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for GET requests. On Postgres they run in autocommit: a read needs no
    BEGIN/COMMIT round trips, and each statement sees committed data as it would anyway under
    READ COMMITTED. (SQLite keeps its transactions: its single connection is the lock.)
    A GET path must therefore not open a SAVEPOINT; conflicts there use ON CONFLICT instead."""
    if engine.dialect.name != "postgresql":
        return create_sessionmaker(engine)
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


async def autocommit_unless_begun(db: AsyncSession) -> bool:
    """Before a write that is one statement, atomic by itself: on Postgres, when nothing has run
    in this session yet, its connection is taken in autocommit mode. The statement then commits
    by itself: no BEGIN and no COMMIT round trip, and its row locks end with it rather than a
    round trip later. The caller may only read after it (nothing else would be rolled back);
    after-commit hooks run as usual when the request's session commits. A session already in a
    transaction (an Idempotency-Key's savepoint, an earlier query) keeps it, and SQLite keeps its
    transactions (its one connection is the write lock). The pool resets the connection's
    isolation level when it is returned. Returns whether the session is now in autocommit."""
    if db.in_transaction() or db.get_bind().dialect.name != "postgresql":
        return False
    await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return True


async def release_autocommitted(db: AsyncSession) -> None:
    """After the statement autocommit_unless_begun was for (only when it returned True): give
    the connection back to the pool now rather than when the request ends. Under load a worker
    has many requests between their statement and their answer; holding a connection through
    that took the pool past its size, and the connections it then opened and closed cost more
    than the requests. The statement committed already: nothing is committed here."""
    await db.commit()
