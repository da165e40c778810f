"""Where a request's writes run without a transaction of their own, and where they never do."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.api.deps import AppState
from chat_store.db import autocommit_unless_begun, release_autocommitted

# Postgres: the id of the transaction a statement runs in (a new one per statement in autocommit).
TRANSACTION_ID = text("SELECT pg_current_xact_id()::text")


async def _transaction_ids(db: AsyncSession) -> set[str]:
    return {str(await db.scalar(TRANSACTION_ID)) for _ in range(3)}


async def test_one_statement_writes_skip_the_transaction_and_the_pool_forgets_it(
    state: AppState,
) -> None:
    if state.engine.dialect.name != "postgresql":
        # SQLite keeps its transaction: its one connection is the write lock.
        async with state.sessionmaker() as db:
            await autocommit_unless_begun(db)
            assert not db.in_transaction()
        return
    async with state.sessionmaker() as db:
        await autocommit_unless_begun(db)
        assert len(await _transaction_ids(db)) == 3  # each statement commits by itself
        await db.commit()
    # Every idle connection of the pool, the one just returned among them: transactions as usual.
    idle = state.engine.pool.checkedin()  # type: ignore[attr-defined]
    assert idle >= 1
    sessions = [state.sessionmaker() for _ in range(idle)]
    try:
        for db in sessions:
            assert len(await _transaction_ids(db)) == 1
    finally:
        for db in sessions:
            await db.close()


async def test_a_session_already_in_a_transaction_keeps_it(state: AppState) -> None:
    async with state.sessionmaker() as db:
        await db.execute(text("SELECT 1"))  # e.g. the credential lookup, or a savepoint's BEGIN
        await autocommit_unless_begun(db)
        if state.engine.dialect.name == "postgresql":
            assert len(await _transaction_ids(db)) == 1
        assert db.in_transaction()
        await db.rollback()


async def test_an_autocommitted_write_gives_its_connection_back_at_once(
    state: AppState,
) -> None:
    """Not at the end of the request: under load, connections held through the rest of every
    request took the pool past its size."""
    pool = state.engine.pool
    async with state.sessionmaker() as db:
        autocommitted = await autocommit_unless_begun(db)
        if not autocommitted:  # SQLite: the request's transaction keeps it
            assert state.engine.dialect.name != "postgresql"
            return
        await db.execute(text("SELECT 1"))
        held = pool.checkedout()  # type: ignore[attr-defined]
        await release_autocommitted(db)
        assert pool.checkedout() == held - 1  # type: ignore[attr-defined]
        assert not db.in_transaction()
