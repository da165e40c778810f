"""Alembic environment: one history for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool, text
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
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # The search index is built by its migration and kept by triggers, not by models.
        include_name=include_name,
    )


# Any constant: several containers starting at once migrate one after the other.
_MIGRATION_LOCK_ID = 725_199_001


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        context.run_migrations()


async def _run_async() -> None:
    url, connect_args = _url_and_args()
    if url.startswith("sqlite"):
        get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
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
