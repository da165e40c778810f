"""Migrations 0003_search, 0006_search_recent, 0007_search_owned and 0008_search_parts: messages
stored before them are indexed by their batched backfills, and they go down and up again."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from chat_store import migrate
from tests.backends import provision
from tests.conftest import app_on
from tests.factories import API, Account, Factory


def _migration(name: str = "2026-12-05_search") -> ModuleType:
    path = migrate.MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), Path(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _seed(client: httpx.AsyncClient) -> tuple[Account, list[str]]:
    factory = Factory(client)
    account = await factory.account()
    session = await factory.chat_session(account, title="heron backlog")
    messages = await factory.messages(account, session["id"], 7, content="heron message")
    await factory.message(account, session["id"], role="assistant", status="pending")
    return account, [message["id"] for message in messages]


async def _found(client: httpx.AsyncClient, account: Account) -> tuple[set[str], int]:
    response = await client.get(
        f"{API}/search", params={"q": "heron", "limit": 100}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    messages = {hit["message"]["id"] for hit in hits if hit["message"]}
    return messages, sum(1 for hit in hits if hit["message"] is None)


async def test_messages_stored_before_the_migration_are_found_after_it() -> None:
    async with provision("mig") as backend, app_on(backend) as started:
        client = started.client
        account, ids = await _seed(client)
        await asyncio.to_thread(migrate.downgrade, backend.database_url, "0004_archive")
        await asyncio.to_thread(migrate.upgrade, backend.database_url)

        assert await _found(client, account) == (set(ids), 1)


async def test_the_backfill_runs_in_batches_and_indexes_only_final_messages() -> None:
    migration = _migration()
    async with provision("mig") as backend, app_on(backend) as started:
        client = started.client
        account, ids = await _seed(client)
        engine = create_async_engine(backend.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                batches = await connection.run_sync(_empty_and_backfill, migration)
                await connection.commit()
        finally:
            await engine.dispose()

        # Postgres walks all 8 messages (3 + 3 + 2, the pending one left without a vector),
        # SQLite the 7 final ones (3 + 3 + 1), and its one titled session. (Postgres indexes
        # titles by an expression: nothing to fill.)
        assert batches == (3, 1 if backend.name == "sqlite" else 0)
        assert await _found(client, account) == (set(ids), 1)


def _empty_and_backfill(connection: Connection, migration: Any) -> tuple[int, int]:
    if connection.dialect.name == "postgresql":
        connection.execute(text("UPDATE message SET search_vector = NULL"))
        batches = migration.backfill_postgres(connection, 3)
        # 0007_search_owned then tags the vectors with their owner, in batches as well.
        owned = _migration("2026-12-06_search_owned")
        assert owned.rewrite_vectors(connection, 3, owned=True) == batches
        return batches, 0
    # Since 0008_search_parts the messages are in 16 tables, each filled as 0003 filled one.
    parts = _migration("2026-12-06_search_parts")
    tables = [parts.names(part)[0] for part in parts.PARTS]
    for table in [*tables, "chat_session_fts"]:
        connection.execute(text(f"INSERT INTO {table}({table}) VALUES ('delete-all')"))
    return (
        parts.backfill_parts(connection, 3),
        migration.backfill_sqlite(
            connection, "chat_session_search_source", "chat_session_fts", "title", 3
        ),
    )


@pytest.mark.postgres_only
async def test_two_processes_migrating_at_once_both_succeed() -> None:
    """The backfill commits the transaction that held the migration lock; the lock is held for
    the session, so the second migration waits for the first to finish and has nothing to do
    (rather than running the same revision again and failing to stamp it)."""
    async with provision("mig") as backend:
        await asyncio.to_thread(migrate.downgrade, backend.database_url, "0004_archive")
        # Processes, as containers would be: alembic's context is one per process.
        code = "import sys; from chat_store import migrate; migrate.upgrade(sys.argv[1])"
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, backend.database_url, stderr=asyncio.subprocess.PIPE
            )
            for _ in range(2)
        ]
        for process in processes:
            _, stderr = await process.communicate()
            assert process.returncode == 0, stderr.decode()[-2000:]

        engine = create_async_engine(backend.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                current = await connection.run_sync(migrate.current_revisions)
        finally:
            await engine.dispose()
        assert current == migrate.head_revisions()


async def _message_indexes(database_url: str) -> set[str]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: {index["name"] for index in inspect(sync).get_indexes("message")}
            )
    finally:
        await engine.dispose()
    return {name for name in found if name}


async def test_the_owners_index_by_time_replaces_the_one_by_owner_and_goes_back() -> None:
    """Migration 0006_search_recent: a common word is still found (and ranked among the newest
    matches) after going down and up again."""
    async with provision("mig") as backend, app_on(backend) as started:
        account, ids = await _seed(started.client)
        indexes = await _message_indexes(backend.database_url)
        assert "ix_message_user_id_created_at" in indexes
        assert "ix_message_user_id" not in indexes

        await asyncio.to_thread(migrate.downgrade, backend.database_url, "0005_tool_calls")
        indexes = await _message_indexes(backend.database_url)
        assert "ix_message_user_id" in indexes
        assert "ix_message_user_id_created_at" not in indexes

        await asyncio.to_thread(migrate.upgrade, backend.database_url)
        assert "ix_message_user_id_created_at" in await _message_indexes(backend.database_url)
        assert await _found(started.client, account) == (set(ids), 1)


@pytest.mark.postgres_only
async def test_vectors_are_tagged_with_their_owner_and_go_back() -> None:
    """Migration 0007_search_owned: each word of a message's vector carries its owner's tag, so
    the GIN index holds one list per user and word; down and up again, the same messages are
    found (this service's queries are tagged: it searches at the head revision only), and
    another user's are not."""
    async with provision("mig") as backend, app_on(backend) as started:
        client = started.client
        account, ids = await _seed(client)
        other, _ = await _seed(client)
        tag = base64.b64encode(uuid.UUID(account.user_id).bytes[-3:]).decode()

        async def first_words() -> set[str]:
            engine = create_async_engine(backend.database_url, poolclass=NullPool)
            try:
                async with engine.connect() as connection:
                    rows = await connection.execute(
                        text(
                            "SELECT DISTINCT split_part(search_vector::text, ' ', 1) "
                            "FROM message WHERE user_id = :owner AND search_vector IS NOT NULL"
                        ),
                        {"owner": account.user_id},
                    )
                    return {row[0] for row in rows}
            finally:
                await engine.dispose()

        assert await first_words() == {f"'{tag}heron':1"}
        await asyncio.to_thread(migrate.downgrade, backend.database_url, "0006_search_recent")
        assert await first_words() == {"'heron':1"}
        await asyncio.to_thread(migrate.upgrade, backend.database_url)

        assert await first_words() == {f"'{tag}heron':1"}
        assert await _found(client, account) == (set(ids), 1)
        assert not (await _found(client, other))[0] & set(ids)
