"""The migration history: reversible, and at head it builds exactly the models' schema."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from chat_store import migrate
from chat_store.models import Base
from chat_store.models.search import include_name
from tests.backends import provision
from tests.conftest import app_on


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": False, "include_name": include_name},
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _run(engine: AsyncEngine, work: Any) -> Any:
    async with engine.connect() as connection:
        return await connection.run_sync(work)


async def test_downgrade_to_base_and_upgrade_again() -> None:
    async with provision("mig") as backend:
        engine = create_async_engine(backend.database_url, poolclass=NullPool)
        try:
            assert await _run(engine, _schema_diff) == []

            await asyncio.to_thread(migrate.downgrade, backend.database_url, "base")
            assert await _run(engine, _tables) <= {"alembic_version"}
            assert await _run(engine, migrate.current_revisions) == frozenset()

            await asyncio.to_thread(migrate.upgrade, backend.database_url)
            assert await _run(engine, migrate.current_revisions) == migrate.head_revisions()
            # What the migrations build is what the models declare: nothing for autogenerate.
            assert await _run(engine, _schema_diff) == []
        finally:
            await engine.dispose()


async def test_readiness_follows_the_migration_state() -> None:
    async with provision("mig") as backend:
        await asyncio.to_thread(migrate.downgrade, backend.database_url, "base")
        async with app_on(backend) as started:
            pending = await started.client.get("/health/ready")
            await asyncio.to_thread(migrate.upgrade, backend.database_url)
            ready = await started.client.get("/health/ready")

    assert pending.status_code == 503
    assert pending.json()["database"] == "migrations_pending"
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"


def test_the_history_has_one_head() -> None:
    # Two migrations written side by side with the same parent would leave two heads, and
    # `upgrade head` would refuse to run.
    assert len(migrate.head_revisions()) == 1
