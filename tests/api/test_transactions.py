"""Where a request's writes run alone, on the driver in autocommit (db.fetch_one with
standalone=True), and where they never do. SQLite keeps its transactions (its one connection is
the write lock): the tests of statements run on the driver are Postgres only."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Float, Integer, String, bindparam, event, func, literal, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from chat_store import db as database
from chat_store.api.deps import AppState
from chat_store.db import fetch_one
from chat_store.models import Message
from tests.factories import API, Factory

# Postgres: the id of the transaction a statement runs in (a new one per statement in autocommit).
TRANSACTION_ID = select(func.pg_current_xact_id().cast(String).label("xact"))


def _checked_out(state: AppState) -> int:
    return int(state.engine.pool.checkedout())  # type: ignore[attr-defined]


@pytest.fixture
def invalidated(state: AppState) -> Iterator[list[object]]:
    """The pool's connections invalidated (closed, not reused) during the test."""
    closed: list[object] = []

    def on_invalidate(dbapi_connection: object, *_: object) -> None:
        closed.append(dbapi_connection)

    pool = state.engine.sync_engine.pool
    event.listen(pool, "invalidate", on_invalidate)
    yield closed
    event.remove(pool, "invalidate", on_invalidate)


async def test_a_standalone_write_runs_alone_only_in_a_fresh_postgres_session(
    state: AppState,
) -> None:
    postgres = state.engine.dialect.name == "postgresql"
    one = select(literal(1).label("one"))
    async with state.sessionmaker() as db:
        assert await fetch_one(db, one, {}, standalone=True) == {"one": 1}
        assert db.in_transaction() != postgres  # on Postgres the session never began
        await db.rollback()
        await db.execute(text("SELECT 1"))  # e.g. the credential lookup, or a savepoint's BEGIN
        if postgres:  # then it runs in the session's transaction
            in_session = str(await db.scalar(TRANSACTION_ID))
            ran = await fetch_one(db, TRANSACTION_ID, {}, standalone=True)
            assert ran == {"xact": in_session}
        await db.rollback()


@pytest.mark.postgres_only
async def test_an_autocommitted_statement_commits_by_itself_and_gives_its_connection_back(
    state: AppState,
) -> None:
    held = _checked_out(state)
    async with state.sessionmaker() as db:
        ids = {
            (await fetch_one(db, TRANSACTION_ID, {}, standalone=True) or {})["xact"]
            for _ in range(3)
        }
        assert len(ids) == 3  # each statement in a transaction of its own
        # Back in the pool at once (not when the request ends), and the session never began.
        assert _checked_out(state) == held
        assert not db.in_transaction()
    # The connection it ran on, back in the pool, runs transactions as usual.
    async with state.sessionmaker() as db:
        in_one = {str(await db.scalar(TRANSACTION_ID)) for _ in range(3)}
        assert len(in_one) == 1
        await db.rollback()


@pytest.mark.postgres_only
async def test_rows_read_through_the_driver_are_the_rows_the_session_reads(
    state: AppState, factory: Factory
) -> None:
    """Bound and decoded by the same type processors: ids, times with their zone, JSON."""
    account = await factory.account()
    session = await factory.chat_session(account)
    created = await factory.message(
        account,
        session["id"],
        role="assistant",
        content="Done.",
        metadata={"client": "cli/1.4", "nested": [1, 2.5, None, True]},
        context={"documents": [{"id": "doc-7", "score": 0.82}]},
        token_count=3,
    )
    statement = select(Message.__table__).where(
        Message.__table__.c.id == bindparam("b_id", type_=Message.__table__.c.id.type)
    )
    params = {"b_id": uuid.UUID(created["id"])}
    async with state.sessionmaker() as db:
        through_session = dict((await db.execute(statement, params)).one()._mapping)
        await db.rollback()
        through_driver = await fetch_one(db, statement, params, standalone=True)
    assert through_driver == through_session
    assert through_driver is not None
    assert through_driver["metadata"] == {"client": "cli/1.4", "nested": [1, 2.5, None, True]}
    assert through_driver["created_at"].tzinfo is not None
    assert isinstance(through_driver["id"], uuid.UUID)


@pytest.mark.postgres_only
async def test_a_refused_statement_raises_a_database_error_and_keeps_the_connection(
    state: AppState, invalidated: list[object]
) -> None:
    dividing = select(
        (literal(1) / bindparam("b_zero", type_=Integer)).cast(Integer).label("quotient")
    )
    held = _checked_out(state)
    async with state.sessionmaker() as db:
        with pytest.raises(DBAPIError) as raised:
            await fetch_one(db, dividing, {"b_zero": 0}, standalone=True)
        assert type(raised.value.orig).__name__ == "DivisionByZeroError"
        assert not raised.value.connection_invalidated
        assert invalidated == []
        assert "b_zero" not in str(raised.value)  # the parameters stay out of logs
        assert _checked_out(state) == held
        assert await fetch_one(db, dividing, {"b_zero": 1}, standalone=True) == {"quotient": 1}


@pytest.mark.postgres_only
async def test_a_cancelled_statement_does_not_leave_its_connection_in_the_pool(
    state: AppState, invalidated: list[object]
) -> None:
    """A request cut off by its timeout: the connection may be mid-statement, so it is closed
    rather than handed to the next request."""
    sleeping = select(func.pg_sleep(bindparam("b_seconds", type_=Float)).label("slept"))
    held = _checked_out(state)
    async with state.sessionmaker() as db:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch_one(db, sleeping, {"b_seconds": 5}, standalone=True), 0.2)
        assert len(invalidated) == 1
        assert _checked_out(state) == held
        assert await fetch_one(db, TRANSACTION_ID, {}, standalone=True) is not None


async def test_writes_with_an_idempotency_key_run_in_the_request_transaction(
    state: AppState,
    client: httpx.AsyncClient,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write and its stored answer commit together: never autocommitted."""

    async def autocommitted(*_: object) -> None:
        raise AssertionError("a write was autocommitted")

    monkeypatch.setattr(database, "_fetch_on_driver", autocommitted)
    account = await factory.account()
    keyed = {**account.headers, "Idempotency-Key": "session-1"}
    session = await client.post(f"{API}/sessions", json={}, headers=keyed)
    assert session.status_code == 201, session.text
    messages = f"{API}/sessions/{session.json()['id']}/messages"
    keyed["Idempotency-Key"] = "message-1"
    appended = await client.post(messages, json={"role": "user", "content": "x"}, headers=keyed)
    assert appended.status_code == 201, appended.text
    # Without a key, the same append is autocommitted on Postgres (here: the stand-in fails).
    unkeyed = await client.post(
        messages, json={"role": "user", "content": "y"}, headers=account.headers
    )
    postgres = state.engine.dialect.name == "postgresql"
    assert unkeyed.status_code == (500 if postgres else 201), unkeyed.text


@pytest.mark.postgres_only
async def test_a_connection_lost_mid_statement_is_a_database_error_and_the_pool_starts_over(
    state: AppState, invalidated: list[object]
) -> None:
    """A restart or a terminated backend: answered 503 (the error says the connection is
    gone), and the pool replaces the connections it opened before, as SQLAlchemy does."""
    # Its own label: the query text this test looks for (other tests' sleeps may still run).
    sleeping = select(func.pg_sleep(bindparam("b_seconds", type_=Float)).label("lost_sleep"))
    async with state.sessionmaker() as db:
        running = asyncio.create_task(fetch_one(db, sleeping, {"b_seconds": 5}, standalone=True))
        # In autocommit: pg_stat_activity is read once per transaction.
        autocommit = state.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as admin:
            for _ in range(250):
                pid = await admin.scalar(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND query LIKE '%lost_sleep%'"
                    )
                )
                if pid is not None:
                    break
                await asyncio.sleep(0.02)
            assert pid is not None
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            await running
    assert raised.value.connection_invalidated
    assert len(invalidated) == 1
    async with state.sessionmaker() as db:
        assert await fetch_one(db, TRANSACTION_ID, {}, standalone=True) is not None


@pytest.mark.postgres_only
async def test_a_connection_that_cannot_be_opened_is_a_database_error(state: AppState) -> None:
    """As SQLAlchemy reports it (the API answers those; "too many clients" with a 503)."""
    engine = create_async_engine(state.engine.url.set(database="chat_store_no_such_database"))
    try:
        async with async_sessionmaker(engine)() as db:
            with pytest.raises(DBAPIError) as raised:
                await fetch_one(db, TRANSACTION_ID, {}, standalone=True)
        assert "chat_store_no_such_database" in str(raised.value.orig)
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
async def test_db_echo_logs_the_statements_run_on_the_driver(
    state: AppState, caplog: pytest.LogCaptureFixture
) -> None:
    state.engine.echo = True
    try:
        with caplog.at_level(logging.INFO, logger="sqlalchemy.engine.Engine"):
            async with state.sessionmaker() as db:
                await fetch_one(db, TRANSACTION_ID, {}, standalone=True)
    finally:
        state.engine.echo = False
    assert any("pg_current_xact_id" in record.getMessage() for record in caplog.records)
