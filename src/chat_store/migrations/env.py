"""Alembic environment: one history for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from alembic import context
from sqlalchemy import Connection, event, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from chat_store.models import Base
from chat_store.models.search import include_name
from chat_store.settings import get_settings, normalize_database_url

config = context.config
target_metadata = Base.metadata


def _url_and_args() -> tuple[str, dict[str, object]]:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return normalize_database_url(url)
    settings = get_settings()
    return settings.sqlalchemy_url, settings.sqlalchemy_connect_args


def _configure(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=sqlite,
        # SQLite's DDL is transactional once BEGIN is sent (see _sqlite_on_connect): a run
        # is one transaction, so a run that stops half-way leaves the file as it was.
        transactional_ddl=True if sqlite else None,
        compare_type=True,
        # The search index is built by its migration and kept by triggers, not by models.
        include_name=include_name,
    )


# Any constant: several containers starting at once migrate one after the other.
_MIGRATION_LOCK_ID = 725_199_001
_LOCK_POLL_SECONDS = 0.2


def _hold_migration_lock(connection: Connection) -> None:
    """Take the migration lock for the session (until the connection closes), asking again
    while another process holds it, with no transaction open between the asks.

    A migration may commit as it goes and build an index CONCURRENTLY, which waits for every
    transaction open in the database: a second migrator waiting for the lock inside a
    transaction (pg_advisory_xact_lock) would deadlock with it."""
    statement = text("SELECT pg_try_advisory_lock(:id)")
    while True:
        with connection.begin():
            if connection.execute(statement, {"id": _MIGRATION_LOCK_ID}).scalar():
                return
        time.sleep(_LOCK_POLL_SECONDS)


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    postgres = connection.dialect.name == "postgresql"
    # A connection handed in already in a transaction takes the lock for that transaction.
    in_transaction = connection.in_transaction()
    if postgres and not in_transaction:
        _hold_migration_lock(connection)
    with context.begin_transaction():
        if postgres and in_transaction:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        context.run_migrations()


# How long a migration waits for another process's write lock on a SQLite file: another
# migrator may be rebuilding a large search index.
_SQLITE_LOCK_WAIT_MS = 600_000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_LOCK_WAIT_MS}")
    cursor.close()
    # The sqlite3 module otherwise commits each CREATE, ALTER and DROP by itself: a revision
    # stopped half-way (killed, a full disk, an error) would keep its first objects while
    # alembic_version still names the revision before, and every later run would fail on them.
    dbapi_connection.isolation_level = None


def _sqlite_on_begin(connection: Connection) -> None:
    # The write lock at BEGIN: processes migrating one file at once go one after the other, and
    # each reads alembic_version under the lock (the one before it has committed or not).
    connection.exec_driver_sql("BEGIN IMMEDIATE")


async def _run_async() -> None:
    url, connect_args = _url_and_args()
    if url.startswith("sqlite"):
        get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called with a live connection (tests, autogenerate checks)
        _run_sync(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    url, _ = _url_and_args()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
