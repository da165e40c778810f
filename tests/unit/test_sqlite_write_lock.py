"""SQLite with several processes on one file (two engines here, as two processes would have):
a transaction of the writing connection takes the write lock at BEGIN, so a request that reads
first (its caller's row) and writes then is never refused because another process wrote in
between; the read sessions take no lock and never wait for a writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chat_store.cache import MemoryCache
from chat_store.db import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    create_snapshot_sessionmaker,
    read_only,
    read_snapshot,
)
from chat_store.services import health
from chat_store.settings import Settings


@pytest.fixture
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat-store.db'}"
    settings = Settings(data_dir=tmp_path)
    one, other = create_engine(settings, url), create_engine(settings, url)
    async with one.begin() as connection:
        await connection.execute(text("CREATE TABLE note (n INTEGER NOT NULL)"))
    yield one, other
    await one.dispose()
    await other.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with create_read_sessionmaker(engine)() as db:
        return int((await db.execute(text("SELECT count(*) FROM note"))).scalar_one())


async def test_a_write_that_reads_first_waits_for_another_process_rather_than_failing(
    two_processes: tuple[AsyncEngine, AsyncEngine],
) -> None:
    one, other = two_processes

    async def other_process_writes() -> None:
        async with create_sessionmaker(other)() as db:
            await db.execute(text("INSERT INTO note VALUES (2)"))
            await db.commit()

    async with create_sessionmaker(one)() as db:
        # Reads first, as a request that looks its caller up before it writes.
        assert (await db.execute(text("SELECT count(*) FROM note"))).scalar_one() == 0
        meanwhile = asyncio.create_task(other_process_writes())
        await asyncio.sleep(0.3)
        assert not meanwhile.done()  # the other process waits for this transaction's lock
        await db.execute(text("INSERT INTO note VALUES (1)"))  # a DEFERRED one failed here
        await db.commit()
    await asyncio.wait_for(meanwhile, 10)

    async with create_read_sessionmaker(one)() as db:
        stored = (await db.execute(text("SELECT n FROM note ORDER BY rowid"))).scalars()
        assert list(stored) == [1, 2]


async def test_reads_do_not_wait_for_another_process_that_is_writing(
    two_processes: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """GET requests' sessions, a live stream's and the readiness check."""
    one, other = two_processes
    async with create_sessionmaker(other)() as writing:
        await writing.execute(text("INSERT INTO note VALUES (1)"))  # holds the write lock
        async with asyncio.timeout(5):  # a read that took the lock would wait 30 s
            assert await _count(one) == 0  # what was committed
            async with create_snapshot_sessionmaker(one)() as db:
                await read_snapshot(db)
                assert (await db.execute(text("SELECT count(*) FROM note"))).scalar_one() == 0
        # Reached the database at once (no migrations here); waiting would be "unavailable".
        assert (await health.readiness(one, MemoryCache())).database == "migrations_pending"
        await writing.commit()
    assert await _count(one) == 1


async def test_a_read_session_reads_on_a_read_only_connection_where_it_may(
    two_processes: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """The read sessions are the writing engine with another BEGIN: `read_only` still finds
    that engine's read-only connections for them, so a search does not wait for a write."""
    one, _ = two_processes
    for sessionmaker in (create_read_sessionmaker(one), create_sessionmaker(one)):
        async with sessionmaker() as db, read_only(db) as reader:
            assert reader is not db
            assert (await reader.execute(text("PRAGMA query_only"))).scalar_one() == 1
