"""The migration history: reversible, and at head it builds exactly the models' schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from chat_store import migrate
from chat_store.models import Base
from chat_store.models.search import include_name
from tests.backends import provision
from tests.conftest import app_on

OWN = migrate.CONCURRENT_INDEXES


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


def _sqlite_objects(path: Path) -> tuple[str | None, set[str]]:
    """The file's alembic revision and the names of its tables, indexes, views and triggers."""
    with sqlite3.connect(path) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        columns = {
            f"generation.{row[1]}" for row in connection.execute("PRAGMA table_info(generation)")
        }
    return version, names | columns


def test_a_sqlite_migration_that_fails_half_way_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """A run is one transaction on SQLite: a revision that fails after others ran (a full disk,
    a kill, an object in the way) undoes them all, and the next run starts from where the file
    was. Before, each CREATE/ALTER/DROP committed by itself, and every later run failed on the
    objects the stopped one had left."""
    path = tmp_path / "half.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url, "0010_archived_message")
    before = _sqlite_objects(path)
    assert "generation.handovers" not in before[1]
    with sqlite3.connect(path) as connection:  # in the way of 0012's table
        connection.execute("CREATE TABLE archive_deletion (x INTEGER)")
    in_the_way = _sqlite_objects(path)

    with pytest.raises(Exception, match="archive_deletion"):
        migrate.upgrade(url)
    # 0011 ran before 0012 failed: its column is gone with it, and the revision is unchanged.
    assert _sqlite_objects(path) == in_the_way

    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE archive_deletion")
    migrate.upgrade(url)
    version, names = _sqlite_objects(path)
    assert version in migrate.head_revisions()
    assert {"generation.handovers", "archive_deletion"} <= names


async def _execute(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


def _column_names(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


async def test_the_repair_revision_brings_back_what_first_forms_of_revisions_lacked() -> None:
    """`0012_archive_deletion` and (Postgres) `0007_search_owned` were changed after some
    databases had run them, and a failed CONCURRENTLY build of `0006_search_recent` could leave
    an INVALID index that a second run kept: `0013_repair` makes such a database what the
    current revisions make."""
    async with provision("mig") as backend:
        engine = create_async_engine(backend.database_url, poolclass=NullPool)
        try:
            await asyncio.to_thread(
                migrate.downgrade, backend.database_url, "0012_archive_deletion"
            )
            damage = ["ALTER TABLE archive_deletion DROP COLUMN refused_at"]
            if backend.name == "postgres":
                damage += [
                    "ALTER TABLE chat_session DROP COLUMN search_vector",
                    "UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = 'ix_message_user_id_created_at'::regclass",
                    # What a failed REINDEX CONCURRENTLY of one of them leaves behind.
                    "CREATE INDEX ix_message_search_ccnew ON message (id)",
                    "UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = 'ix_message_search_ccnew'::regclass",
                    # Someone else's failed build: not chat-store's to rebuild (it would fail).
                    "CREATE TABLE ops_note (k int)",
                    "INSERT INTO ops_note VALUES (1), (1)",
                    "CREATE INDEX ops_note_k ON ops_note (k)",
                    "UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = 'ops_note_k'::regclass",
                ]
            await _execute(engine, *damage)
            assert "refused_at" not in await _run(
                engine, lambda c: _column_names(c, "archive_deletion")
            )

            await asyncio.to_thread(migrate.upgrade, backend.database_url)
            assert "refused_at" in await _run(
                engine, lambda c: _column_names(c, "archive_deletion")
            )
            if backend.name == "postgres":
                assert "search_vector" in await _run(
                    engine, lambda c: _column_names(c, "chat_session")
                )
                invalid = await _run(
                    engine, lambda c: migrate.invalid_indexes(c, ("ops_note_k", *OWN))
                )
                assert invalid == ["ops_note_k"]
                assert await _run(engine, lambda c: migrate.reindex_leftovers(c, OWN)) == []
                indexes = await _run(
                    engine, lambda c: {i["name"] for i in inspect(c).get_indexes("chat_session")}
                )
                assert "ix_chat_session_search" in indexes
                message_indexes = await _run(
                    engine, lambda c: {i["name"] for i in inspect(c).get_indexes("message")}
                )
                assert "ix_message_search_ccnew" not in message_indexes
                await _execute(engine, "DROP TABLE ops_note")
            assert await _run(engine, _schema_diff) == []
        finally:
            await engine.dispose()


@pytest.mark.postgres_only
async def test_search_recent_builds_again_an_index_a_failed_build_left_invalid() -> None:
    """A CREATE INDEX CONCURRENTLY that failed leaves an INVALID index of that name: run again,
    `0006_search_recent` builds it anew before dropping the index it replaces."""
    async with provision("mig") as backend:
        engine = create_async_engine(backend.database_url, poolclass=NullPool)
        try:
            await asyncio.to_thread(migrate.downgrade, backend.database_url, "0005_tool_calls")
            await _execute(
                engine,
                "CREATE INDEX ix_message_user_id_created_at ON message (user_id, created_at, id)",
                "UPDATE pg_index SET indisvalid = false "
                "WHERE indexrelid = 'ix_message_user_id_created_at'::regclass",
            )
            await asyncio.to_thread(migrate.upgrade, backend.database_url, "0006_search_recent")
            assert await _run(engine, lambda c: migrate.invalid_indexes(c, OWN)) == []
            indexes = await _run(
                engine, lambda c: {i["name"] for i in inspect(c).get_indexes("message")}
            )
            assert "ix_message_user_id_created_at" in indexes
            assert "ix_message_user_id" not in indexes
        finally:
            await engine.dispose()
