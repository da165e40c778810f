"""Where a request's writes run alone, on the driver in autocommit (db.fetch_one with
standalone=True), and where they never do. SQLite keeps its transactions (its one connection is
the write lock): the tests of statements run on the driver are Postgres only."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    bindparam,
    event,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from chat_store import db as database
from chat_store.api.deps import AppState
from chat_store.db import fetch_one
from chat_store.models import Message
from tests.assertions import assert_problem
from tests.backends import PG_ADMIN_URL, provision
from tests.conftest import app_on
from tests.factories import API, Account, Factory

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
    """The write and its stored answer commit together: never autocommitted. (A read may run
    by itself: the archived check before every message route does.)"""
    on_driver = database._fetch_on_driver

    async def reads_only(db: object, statement: object, params: Any) -> Any:
        if not isinstance(statement, Select):
            raise AssertionError("a write was autocommitted")
        return await on_driver(db, statement, params)  # type: ignore[arg-type]

    monkeypatch.setattr(database, "_fetch_on_driver", reads_only)
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


# What asyncpg raised after a backend was terminated mid-exchange: not an InterfaceError, and
# SQLAlchemy's adapter passes it on unwrapped.
OUT_OF_STEP = "cannot switch to state 12; another operation (2) is in progress"


@pytest.mark.postgres_only
async def test_a_protocol_out_of_step_on_the_driver_is_a_503_and_the_connection_is_discarded(
    client: httpx.AsyncClient,
    factory: Factory,
    invalidated: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    fetchrow = asyncpg.Connection.fetchrow

    async def out_of_step(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        if "INSERT INTO message " in query:
            monkeypatch.undo()  # once
            raise asyncpg.InternalClientError(OUT_OF_STEP)
        return await fetchrow(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.Connection, "fetchrow", out_of_step)
    messages = f"{API}/sessions/{session['id']}/messages"
    body = {"role": "user", "content": "x"}
    lost = await client.post(messages, json=body, headers=account.headers)
    assert_problem(lost, 503, "service_unavailable")
    assert len(invalidated) == 1
    again = await client.post(messages, json=body, headers=account.headers)
    assert again.status_code == 201, again.text
    assert again.json()["seq"] == 1


@pytest.mark.postgres_only
async def test_a_protocol_out_of_step_in_a_session_is_a_503_and_the_connection_is_discarded(
    state: AppState, client: httpx.AsyncClient, factory: Factory, invalidated: list[object]
) -> None:
    """The same error in the request's transaction (an append with an Idempotency-Key): the
    connection is invalidated, not rolled back and handed to the next request."""
    account = await factory.account()
    session = await factory.chat_session(account)

    def out_of_step(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "INSERT INTO message " in statement:
            event.remove(state.engine.sync_engine, "before_cursor_execute", out_of_step)
            raise asyncpg.InternalClientError(OUT_OF_STEP)

    event.listen(state.engine.sync_engine, "before_cursor_execute", out_of_step)
    messages = f"{API}/sessions/{session['id']}/messages"
    keyed = {**account.headers, "Idempotency-Key": "once"}
    body = {"role": "user", "content": "x"}
    try:
        lost = await client.post(messages, json=body, headers=keyed)
    finally:
        if event.contains(state.engine.sync_engine, "before_cursor_execute", out_of_step):
            event.remove(state.engine.sync_engine, "before_cursor_execute", out_of_step)
    assert_problem(lost, 503, "service_unavailable")
    assert len(invalidated) == 1
    again = await client.post(messages, json=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.json()["seq"] == 1


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


@pytest.mark.postgres_only
async def test_writes_while_backends_are_terminated_are_answered_503_never_500() -> None:
    """Appends (with and without an Idempotency-Key) and deltas (on the driver and through the
    session) run while another connection terminates the app's backends again and again. A
    lost connection is a 503, which a client retries; never a 500. Every acknowledged write is
    stored, seqs have no gaps, and the pool serves again once the terminations stop."""
    async with provision("terminated") as backend:
        database = make_url(backend.database_url).database
        async with app_on(backend, db_pool_size=8) as started:
            app, client = started.app, started.client
            loop = _WriteLoop(client, await started.factory.account())
            await loop.prepare()
            with _invalidations(app.state.resources) as invalidated:
                async with asyncio.TaskGroup() as group:
                    for writer in range(2):
                        group.create_task(loop.append_plain(writer))
                        group.create_task(loop.append_keyed(writer))
                        group.create_task(loop.append_deltas(writer))
                    group.create_task(loop.terminate_backends(database, rounds=60))
            assert loop.answers[503] > 0, loop.answers  # the terminations did cut requests off
            assert invalidated
            assert set(loop.answers) <= {200, 201, 503}, loop.answers

            # Recovered: after a connection killed in the last round is found dead (503 at
            # most once per pooled connection), every request is answered at once.
            for writer in range(2):
                await loop.append_plain(writer, once=True)
            settled = dict(loop.answers)
            for writer in range(2):
                await loop.append_plain(writer, once=True)
                await loop.append_keyed(writer, once=True)
                await loop.append_deltas(writer, once=True)
            assert loop.answers[503] == settled[503], loop.answers
            await loop.check_stored()
            assert _checked_out(app.state.resources) == 0


@contextlib.contextmanager
def _invalidations(state: AppState) -> Iterator[list[object]]:
    closed: list[object] = []

    def on_invalidate(dbapi_connection: object, *_: object) -> None:
        closed.append(dbapi_connection)

    pool = state.engine.sync_engine.pool
    event.listen(pool, "invalidate", on_invalidate)
    try:
        yield closed
    finally:
        event.remove(pool, "invalidate", on_invalidate)


class _WriteLoop:
    """Writers that send each write again after a 503 (as a client does after Retry-After)
    and remember what was acknowledged; they stop once the terminations have."""

    def __init__(self, client: httpx.AsyncClient, account: Account) -> None:
        self.client = client
        self.headers = account.headers
        self.answers: collections.Counter[int] = collections.Counter()
        self.stopped = asyncio.Event()
        self.session_id = ""
        self.acknowledged: dict[str, tuple[str, int]] = {}  # content: (id, seq)
        self.keyed: set[str] = set()
        self.streams: dict[int, tuple[str, str, int]] = {}  # writer: (message id, text, offset)
        self.counter = itertools.count()

    @property
    def messages(self) -> str:
        return f"{API}/sessions/{self.session_id}/messages"

    async def send(self, path: str, body: dict[str, object], **headers: str) -> httpx.Response:
        while True:
            response = await self.client.post(path, json=body, headers={**self.headers, **headers})
            self.answers[response.status_code] += 1
            if response.status_code != 503:
                assert response.status_code in (200, 201), response.text
                return response
            assert_problem(response, 503, "service_unavailable")
            await asyncio.sleep(0.005)

    async def prepare(self) -> None:
        created = await self.send(f"{API}/sessions", {})
        self.session_id = created.json()["id"]
        for writer in range(2):
            answer = await self.send(self.messages, {"role": "assistant", "status": "pending"})
            self.streams[writer] = (answer.json()["id"], "", 0)

    def _stored(self, response: httpx.Response) -> None:
        message = response.json()
        self.acknowledged[message["content"]] = (message["id"], message["seq"])

    async def append_plain(self, writer: int, *, once: bool = False) -> None:
        """Without a key: on Postgres one autocommitted statement on the driver."""
        while not self.stopped.is_set() or once:
            content = f"plain {writer}.{next(self.counter)}"
            self._stored(await self.send(self.messages, {"role": "user", "content": content}))
            if once:
                return

    async def append_keyed(self, writer: int, *, once: bool = False) -> None:
        """With a key: the request's transaction, the key's record committed with the row."""
        while not self.stopped.is_set() or once:
            content = f"keyed {writer}.{next(self.counter)}"
            body = {"role": "user", "content": content}
            self._stored(await self.send(self.messages, body, **{"Idempotency-Key": content}))
            self.keyed.add(content)
            if once:
                return

    async def append_deltas(self, writer: int, *, once: bool = False) -> None:
        """Every other delta with return=minimal (on the driver), the others in the session."""
        message_id, streamed, offset = self.streams[writer]
        while not self.stopped.is_set() or once:
            number = next(self.counter)
            delta = f"<{number}>"
            minimal = {"Prefer": "return=minimal"} if number % 2 else {}
            answer = await self.send(
                f"{self.messages}/{message_id}/append",
                {"delta": delta, "offset": offset},
                **minimal,
            )
            streamed += delta
            offset = answer.json()["length"]
            assert offset == len(streamed)
            self.streams[writer] = (message_id, streamed, offset)
            if once:
                return

    async def terminate_backends(self, database: str | None, rounds: int) -> None:
        """pg_terminate_backend on every backend of the app's database, from a connection
        to another database (so it is never among them)."""
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            for round_ in range(rounds):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
                await asyncio.sleep(0.01 + (round_ % 5) * 0.01)
        finally:
            self.stopped.set()
            await admin.close()

    async def check_stored(self) -> None:
        stored: list[dict[str, Any]] = []
        while True:
            page = await self.client.get(
                self.messages,
                params={"limit": 100, "after_seq": stored[-1]["seq"] if stored else 0},
                headers=self.headers,
            )
            assert page.status_code == 200, page.text
            stored.extend(page.json()["data"])
            if not page.json()["has_more"]:
                break
        assert [message["seq"] for message in stored] == list(range(1, len(stored) + 1))
        by_content = collections.defaultdict(list)
        for message in stored:
            by_content[message["content"]].append((message["id"], message["seq"]))
        for content, acknowledged in self.acknowledged.items():
            assert acknowledged in by_content[content], content
        for content in self.keyed:  # sent again after a 503, still stored once
            assert len(by_content[content]) == 1, content
        for message_id, streamed, _ in self.streams.values():
            answer = await self.client.get(f"{self.messages}/{message_id}", headers=self.headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["partial_content"] == streamed
