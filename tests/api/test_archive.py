"""Archive to an object store (a local folder, and a real S3 API: moto's server over HTTP), the
transparent restore on any message access, and a crash between every step, on both backends."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from sqlalchemy import delete, func, insert, select, update

from chat_store.api.deps import AppState
from chat_store.crud import archive as archive_crud
from chat_store.crud import generations as generation_crud
from chat_store.crud import messages as message_crud
from chat_store.errors import ArchiveUnavailable
from chat_store.models import (
    ArchiveDeletion,
    ArchivedMessage,
    ChatSession,
    Generation,
    Message,
    User,
)
from chat_store.services import archive as archive_service
from chat_store.services import export as export_service
from chat_store.services import retention
from chat_store.services.archive import ArchiveAborted, Archiver
from chat_store.services.messages import reading
from chat_store.settings import Settings
from chat_store.storage import ArchiveStore
from tests.api.test_export_import import comparable, exported, full_session
from tests.assertions import assert_problem
from tests.conftest import AppWith
from tests.factories import API, Account, Factory
from tests.support.redis_server import free_port
from tests.support.s3_server import S3Server

THRESHOLD = timedelta(days=90)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def archiver(
    request: pytest.FixtureRequest,
    state: AppState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Archiver:
    """The app's archive store for this test: a folder of its own, or a bucket of its own on
    the S3 server (obstore reads its endpoint and credentials from AWS_*)."""
    if request.param == "local":
        url = (tmp_path / "archive").as_uri()
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        for name, value in server.environment.items():
            monkeypatch.setenv(name, value)
        url = f"s3://{server.new_bucket()}/chat-store"
    store = ArchiveStore(url)
    monkeypatch.setattr(state, "archive", store)
    return Archiver(state.sessionmaker, store)


async def make_idle(state: AppState, *session_ids: str, days: int = 100) -> None:
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id.in_([uuid.UUID(sid) for sid in session_ids]))
            .values(last_activity_at=datetime.now(UTC) - timedelta(days=days))
        )


async def session_row(state: AppState, sid: str) -> ChatSession:
    async with state.sessionmaker() as db:
        row = await archive_crud.get_session(db, uuid.UUID(sid))
    assert row is not None
    return row


async def archive_key(state: AppState, sid: str) -> str:
    """The object key recorded on the session (it has one)."""
    key = (await session_row(state, sid)).archive_key
    assert key is not None
    return key


async def stored_messages(state: AppState, sid: str) -> int:
    async with state.sessionmaker() as db:
        count = await db.scalar(
            select(func.count()).select_from(Message).where(Message.session_id == uuid.UUID(sid))
        )
    return int(count or 0)


async def archived_session(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> tuple[Account, str, dict[str, Any]]:
    """A full session, archived by the job; with its export from before."""
    account = await factory.account()
    sid = await full_session(client, factory, account)
    before = await exported(client, account, sid)
    await make_idle(state, sid)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert (report.sessions, report.messages, report.failed) == (1, 4, 0)
    return account, sid, before


async def assert_live_and_whole(
    client: httpx.AsyncClient, account: Account, sid: str, before: dict[str, Any]
) -> None:
    """Nothing lost: the export (from the database now) equals the one taken before."""
    after = await exported(client, account, sid)
    assert comparable(after) == comparable(before)
    assert [m["id"] for m in after["messages"]] == [m["id"] for m in before["messages"]]


# --- archiving and the transparent restore


async def test_archive_then_read_restores_transparently(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, before = await archived_session(client, factory, state, archiver)

    row = await session_row(state, sid)
    now = datetime.now(UTC)
    assert row.archived_at is not None
    key = row.archive_key
    assert key is not None
    assert key.startswith(f"chat_archives/{now:%Y}/{now:%m}/{sid}/") and key.endswith(".json.gz")
    assert (row.message_count, row.last_seq, row.title) == (4, 5, "Billing flake")
    assert await stored_messages(state, sid) == 0
    # The object is the session's gzipped chat-store/1 JSON export.
    document = json.loads(gzip.decompress(await archiver.store.read(row.archive_key)))
    assert comparable(document) == comparable(before)

    # Lists show it, with a filter; reading the session row does not restore it.
    shown = (await client.get(f"{API}/sessions/{sid}", headers=account.headers)).json()
    assert shown["archived_at"] is not None and shown["message_count"] == 4
    archived = await client.get(f"{API}/sessions?archived=true", headers=account.headers)
    assert [s["id"] for s in archived.json()["data"]] == [sid]
    live = await client.get(f"{API}/sessions?archived=false", headers=account.headers)
    assert live.json()["data"] == []
    # An export reads the archive without restoring.
    assert comparable(await exported(client, account, sid)) == comparable(before)
    assert (await session_row(state, sid)).archived_at is not None

    # Reading the messages (the direct path) restores first.
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == [m["id"] for m in before["messages"]]
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key) == (None, None)
    assert row.restored_at is not None
    assert await stored_messages(state, sid) == 4
    assert await archiver.store.info(key) is None  # deleted once committed
    await assert_live_and_whole(client, account, sid, before)


async def test_a_read_restores_while_another_process_holds_the_write_lock(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    app_with: AppWith,
) -> None:
    """Two processes on one database (two apps here). On SQLite a GET's transaction takes no
    write lock, so the restore it needs waits for the other process's lock in a transaction of
    its own instead of being refused (503)."""
    account, sid, before = await archived_session(client, factory, state, archiver)
    key = (await session_row(state, sid)).archive_key
    assert key is not None
    async with app_with() as other, other.state.sessionmaker() as writing:
        await writing.execute(select(1))  # on SQLite: BEGIN IMMEDIATE, the file's write lock
        reading = asyncio.create_task(
            client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
        )
        await asyncio.sleep(0.5)
        if other.state.engine.dialect.name == "sqlite":
            assert not reading.done()  # it waits for the lock, as a restore that writes does
        await writing.rollback()
        listed = await asyncio.wait_for(reading, 30)
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == [m["id"] for m in before["messages"]]
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key) == (None, None)
    assert await archiver.store.info(key) is None
    await assert_live_and_whole(client, account, sid, before)


async def test_writing_restores_first_on_every_path(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, before = await archived_session(client, factory, state, archiver)
    # One append (the direct path): the next seq after the archived ones.
    appended = await factory.message(account, sid, content="back again")
    assert appended["seq"] == 6
    listed = await client.get(f"{API}/sessions/{sid}/messages?limit=100", headers=account.headers)
    assert [m["seq"] for m in listed.json()["data"]] == [1, 2, 4, 5, 6]

    # FastAPI's path (a batch append), a delta (found archived by its own statement, like the
    # appends and the list) and other route kinds (the context window, a stream).
    for route in ("batch", "delta", "context", "stream"):
        account, sid, before = await archived_session(client, factory, state, archiver)
        if route == "delta":
            streaming = next(m for m in before["messages"] if m["status"] == "in_progress")
            response = await client.post(
                f"{API}/sessions/{sid}/messages/{streaming['id']}/append",
                json={"offset": 15, "delta": " and more"},
                headers=account.headers,
            )
            assert response.status_code == 200, response.text
            assert response.json()["partial_content"] == "Half an answer… and more"
            assert await stored_messages(state, sid) == 4
        elif route == "batch":
            response = await client.post(
                f"{API}/sessions/{sid}/messages/batch",
                json={"messages": [{"role": "user", "content": "more"}]},
                headers=account.headers,
            )
            assert response.status_code == 201, response.text
            assert response.json()["data"][0]["seq"] == 6
        elif route == "context":
            response = await client.get(
                f"{API}/sessions/{sid}/context?max_tokens=100000", headers=account.headers
            )
            assert response.status_code == 200
            assert len(response.json()["data"]) == 4
            await assert_live_and_whole(client, account, sid, before)
        else:
            # A complete message's stream: its text, then done (the answer ends).
            first = before["messages"][0]
            response = await client.get(
                f"{API}/sessions/{sid}/messages/{first['id']}/stream", headers=account.headers
            )
            assert response.status_code == 200
            assert "event: done" in response.text
            await assert_live_and_whole(client, account, sid, before)
        assert (await session_row(state, sid)).archived_at is None


async def test_the_session_row_refuses_history_writes_while_archived(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """An archive that commits between a route's look at the session and its write: the write's
    own statement on the session row refuses it, so nothing lands beside the archive."""
    account, sid, before = await archived_session(client, factory, state, archiver)
    session_id, user_id = uuid.UUID(sid), uuid.UUID(account.user_id)
    streaming = next(m for m in before["messages"] if m["status"] == "in_progress")
    now = datetime.now(UTC)
    reservation = message_crud.SeqReservation(
        user_id=user_id,
        session_id=session_id,
        count=1,
        tokens=0,
        now=now,
        expected_last_seq=None,
        auto_title=None,
    )
    delta = message_crud.Delta(
        user_id=user_id,
        session_id=session_id,
        message_id=uuid.UUID(streaming["id"]),
        offset=15,
        text="late",
        size_bytes=4,
        max_bytes=1 << 20,
        now=now,
    )
    row = await session_row(state, sid)
    async with state.sessionmaker() as db, db.begin():
        assert await message_crud.reserve_seqs(db, reservation) is None
        assert await message_crud.append_delta(db, delta, standalone=False) is None
        state_seen = await message_crud.get_history_state(db, user_id, session_id)
    assert state_seen is not None and state_seen.archived
    after = await session_row(state, sid)
    assert (after.last_seq, after.history_version, after.message_count) == (
        row.last_seq,
        row.history_version,
        row.message_count,
    )
    assert await stored_messages(state, sid) == 0


async def test_explicit_restore_and_the_idle_clock(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, before = await archived_session(client, factory, state, archiver)
    restored = await client.post(f"{API}/sessions/{sid}/restore", headers=account.headers)
    assert restored.status_code == 200, restored.text
    assert restored.json()["archived_at"] is None
    await assert_live_and_whole(client, account, sid, before)
    again = await client.post(f"{API}/sessions/{sid}/restore", headers=account.headers)
    assert again.status_code == 200  # not archived: nothing to do

    # Restored just now: not due again until it has been idle for the whole threshold since.
    dry = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=True)
    assert (dry.dry_run, dry.sessions) == (True, 0)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert report.sessions == 0
    assert (await session_row(state, sid)).archived_at is None


async def test_only_sessions_idle_past_the_threshold_are_archived(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account = await factory.account()
    old, recent = [(await factory.chat_session(account))["id"] for _ in range(2)]
    await factory.messages(account, old, 3)
    await factory.messages(account, recent, 2)
    await make_idle(state, old, days=100)
    await make_idle(state, recent, days=10)
    dry = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=True)
    assert (dry.sessions, dry.messages) == (1, 3)
    assert await stored_messages(state, old) == 3  # a dry run changes nothing
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert (report.sessions, report.messages) == (1, 3)
    assert (await session_row(state, old)).archived_at is not None
    assert (await session_row(state, recent)).archived_at is None


async def test_a_missing_archive_object_is_a_503_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    await archiver.store.delete(key)
    response = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert_problem(response, 503, "archive_unavailable")
    assert (await session_row(state, sid)).archived_at is not None


async def test_purge_removes_the_archive_object(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    _, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    assert await archiver.store.info(key) is not None
    report = await retention.purge_idle_sessions(
        state.sessionmaker, THRESHOLD, dry_run=False, archive=archiver.store
    )
    assert (report.sessions, report.messages) == (1, 4)
    assert await archiver.store.info(key) is None


# --- a crash between any two steps loses nothing and the next run finishes


async def test_a_crash_between_archive_steps_loses_nothing(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    cutoff = datetime.now(UTC) - THRESHOLD
    for stop_after in ("begin", "write", "verify"):
        account = await factory.account()
        sid = await full_session(client, factory, account)
        before = await exported(client, account, sid)
        await make_idle(state, sid)

        plan = await archive_service.begin_archive(archiver, uuid.UUID(sid), cutoff)
        assert plan is not None
        if stop_after in ("write", "verify"):
            written = await archive_service.write_archive(archiver, plan)
            assert written.messages == 4
            if stop_after == "verify":
                await archive_service.verify_archive(archiver, written)
        # The process dies here. Half-way: the messages are still in the database.
        row = await session_row(state, sid)
        assert (row.archived_at, row.archive_key) == (None, plan.key)
        assert await stored_messages(state, sid) == 4
        await assert_live_and_whole(client, account, sid, before)

        # The next run finishes the archive, with the key recorded at the start.
        report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
        assert (report.finished, report.sessions, report.messages) == (1, 1, 4), stop_after
        row = await session_row(state, sid)
        assert row.archived_at is not None and row.archive_key == plan.key
        assert await stored_messages(state, sid) == 0
        await assert_live_and_whole(client, account, sid, before)  # restored on read


async def test_a_failed_commit_rolls_back_whole(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await factory.account()
    sid = await full_session(client, factory, account)
    before = await exported(client, account, sid)
    await make_idle(state, sid)

    async def crash(*_: Any) -> None:
        raise RuntimeError("the process dies while deleting the messages")

    monkeypatch.setattr(archive_crud, "delete_messages", crash)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert (report.sessions, report.failed) == (0, 1)
    row = await session_row(state, sid)
    assert row.archived_at is None and row.archive_key is not None  # the mark was rolled back
    await assert_live_and_whole(client, account, sid, before)

    monkeypatch.undo()
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert (report.finished, report.messages) == (1, 4)


async def test_a_write_during_the_archive_aborts_it(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account = await factory.account()
    sid = await full_session(client, factory, account)
    await make_idle(state, sid)
    cutoff = datetime.now(UTC) - THRESHOLD
    plan = await archive_service.begin_archive(archiver, uuid.UUID(sid), cutoff)
    assert plan is not None
    verified = await archive_service.verify_archive(
        archiver, await archive_service.write_archive(archiver, plan)
    )
    # A new message lands between the copy and the commit: the copy is stale.
    await factory.message(account, sid, content="late")
    with pytest.raises(ArchiveAborted):
        await archive_service.commit_archive(archiver, verified)
    assert await stored_messages(state, sid) == 5
    # Active again, so the next run releases its object instead of archiving it.
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert (report.sessions, report.released) == (0, 1)
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key) == (None, None)
    assert await archiver.store.info(plan.key) is None


async def hold_lease(
    state: AppState,
    account: Account,
    sid: str,
    message_id: str,
    *,
    expires_in: timedelta = timedelta(minutes=5),
) -> None:
    """The answer is being generated (by another process): its lease is held (or, with a
    negative `expires_in`, ran out that long ago)."""
    now = datetime.now(UTC)
    async with state.sessionmaker() as db, db.begin():
        values = {
            "message_id": uuid.UUID(message_id),
            "session_id": uuid.UUID(sid),
            "user_id": uuid.UUID(account.user_id),
            "owner": "elsewhere:1:generating",
            "lease_expires_at": now + expires_in,
            "params": {},
            "created_at": now,
            "updated_at": now,
        }
        assert await generation_crud.insert_generation(db, values)


async def test_a_session_whose_answer_is_being_generated_is_not_archived(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """A continue of an old session's answer leaves its activity as it was: idle as it looks,
    its messages stay while the answer is generated (else the answer loses its lease and its
    writes), even when the lease is taken after the archive began."""
    account = await factory.account()
    sid = await full_session(client, factory, account)
    messages = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    open_answer = next(m for m in messages.json()["data"] if m["status"] == "in_progress")
    await make_idle(state, sid)
    cutoff = datetime.now(UTC) - THRESHOLD
    plan = await archive_service.begin_archive(archiver, uuid.UUID(sid), cutoff)
    assert plan is not None
    verified = await archive_service.verify_archive(
        archiver, await archive_service.write_archive(archiver, plan)
    )

    await hold_lease(state, account, sid, open_answer["id"])
    with pytest.raises(ArchiveAborted, match="being generated"):
        await archive_service.commit_archive(archiver, verified)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)

    assert (report.sessions, report.released) == (0, 1)
    assert await stored_messages(state, sid) == 4
    assert (await session_row(state, sid)).archived_at is None
    dry = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=True)
    assert dry.sessions == 0


@pytest.mark.postgres_only  # a read in autocommit: its statements see the archive commit
async def test_a_history_window_read_as_the_session_was_archived_is_not_served_after(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The archive commits between a list's read of the session's version and its read of the
    rows, which then finds none: the window it caches is of the version before the archive,
    and the restore brings the session back at a newer one."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    for text in ("one", "two", "three"):
        await factory.message(account, sid, content=text)
    await make_idle(state, sid)
    build_window = reading._build_window
    archived: list[object] = []

    async def archive_in_between(*args: Any) -> Any:
        if not archived:
            report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
            archived.append(report)
        return await build_window(*args)

    monkeypatch.setattr(reading, "_build_window", archive_in_between)
    await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    monkeypatch.setattr(reading, "_build_window", build_window)
    assert archived and archived[0].sessions == 1  # type: ignore[attr-defined]

    for _ in range(2):  # the first restores the session, the second may read a cached window
        listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
        assert [m["content"] for m in listed.json()["data"]] == ["one", "two", "three"]


async def test_a_tool_result_restores_the_session_whose_call_it_answers(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """A tool message answers a call stored among the session's messages: when they are
    archived, the append restores them (as every message write does) instead of refusing the
    result as answering no call; one that answers no call is still refused, after the restore."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    await factory.message(account, sid, content="run the tests")
    call = {"id": "call_1", "name": "run_tests", "arguments": "{}"}
    await factory.message(account, sid, role="assistant", content="", tool_calls=[call])
    await make_idle(state, sid)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert report.sessions == 1

    answered = await client.post(
        f"{API}/sessions/{sid}/messages",
        json={"role": "tool", "content": "3 passed", "tool_call_id": "call_1"},
        headers=account.headers,
    )

    assert answered.status_code == 201, answered.text
    assert answered.json()["seq"] == 3
    assert (await session_row(state, sid)).archived_at is None
    assert await stored_messages(state, sid) == 3
    unknown = await client.post(
        f"{API}/sessions/{sid}/messages/batch",
        json={"messages": [{"role": "tool", "content": "x", "tool_call_id": "call_9"}]},
        headers=account.headers,
    )
    assert_problem(unknown, 422, "unknown_tool_call")


async def test_two_requests_restoring_at_once_restore_once(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read restores the session while a delete does too, the read's object read being the
    slower: the delete's restore commits first and deletes a message; the read then finds the
    session restored and puts nothing back, so the deleted message stays deleted."""
    account, sid, before = await archived_session(client, factory, state, archiver)
    deleted_id = before["messages"][0]["id"]
    read = archiver.store.read
    reads = 0

    async def first_read_slow(key: str) -> bytes:
        nonlocal reads
        reads += 1
        data = await read(key)
        if reads == 1:
            await asyncio.sleep(1.0)  # a large object on a slow store
        return data

    monkeypatch.setattr(archiver.store, "read", first_read_slow)
    messages = f"{API}/sessions/{sid}/messages"
    listing = asyncio.create_task(client.get(messages, headers=account.headers))
    await asyncio.sleep(0.3)
    deleted = await client.delete(f"{messages}/{deleted_id}", headers=account.headers)
    listed = await listing

    assert deleted.status_code == 200, deleted.text
    assert listed.status_code == 200, listed.text
    after = (await client.get(messages, headers=account.headers)).json()["data"]
    assert deleted_id not in [message["id"] for message in after]
    assert len(after) == 3 == (await session_row(state, sid)).message_count
    assert await stored_messages(state, sid) == 3
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key) == (None, None)


async def test_an_export_of_a_session_archived_while_it_runs_is_whole(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """An export reads the session's row, and its messages later, at the client's pace: a
    session archived in between (its messages out of the database) is exported whole, its
    messages read from the object; one restored in between (the object deleted), from the
    database."""
    account = await factory.account()
    earlier = (await factory.chat_session(account, title="earlier"))["id"]
    await factory.messages(account, earlier, 1)
    sid = await full_session(client, factory, account)
    whole = await exported(client, account, sid)
    assert len(whole["messages"]) == 4
    source = export_service.ExportSource(state.sessionmaker, archiver.store)

    async def render(exportable: export_service.Exportable) -> list[dict[str, Any]]:
        body = b"".join(
            [part async for part in export_service.render_session(source, exportable, "jsonl")]
        )
        return [json.loads(line) for line in body.decode().splitlines()]

    await make_idle(state, sid)
    before_archive = await export_service.exportable(source, await session_row(state, sid))
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert report.sessions == 1 and await stored_messages(state, sid) == 0
    lines = await render(before_archive)
    assert [line["message"]["id"] for line in lines[1:]] == [m["id"] for m in whole["messages"]]

    # The account export read the row archived (in the batch with the earlier session); the
    # session is restored (its object deleted) before its turn comes.
    async with state.sessionmaker() as db:
        user = await db.get(User, uuid.UUID(account.user_id))
    assert user is not None
    parts = export_service.render_account(source, user)
    head = [await anext(parts), await anext(parts)]  # the account, the earlier session
    assert json.loads(head[1])["session"]["id"] == earlier
    key = await archive_key(state, sid)
    restored = await client.post(f"{API}/sessions/{sid}/restore", headers=account.headers)
    assert restored.status_code == 200, restored.text
    assert await archiver.store.info(key) is None
    body = b"".join([*head, *[part async for part in parts]])
    lines = [json.loads(line) for line in body.decode().splitlines()]
    messages = [line["message"]["id"] for line in lines if line.get("type") == "message"]
    assert messages[1:] == [m["id"] for m in whole["messages"]]


async def test_a_crash_between_restore_steps_loses_nothing(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    for stop_after in ("load", "insert", "mark"):
        account, sid, before = await archived_session(client, factory, state, archiver)
        key = await archive_key(state, sid)
        async with state.sessionmaker() as db, db.begin():
            loaded = await archive_service.load_archive(
                db, archiver.store, uuid.UUID(sid), user_id=None
            )
            assert loaded is not None and len(loaded.messages) == 4
            if stop_after in ("insert", "mark"):
                await archive_service.insert_archived_messages(db, loaded)
            if stop_after == "mark":
                assert await archive_service.mark_restored(db, loaded)
        # The process dies here, after that commit.
        row = await session_row(state, sid)
        if stop_after == "mark":
            # Half-way: live, its object not yet deleted. The job deletes it.
            assert (row.archived_at, row.archive_key) == (None, key)
            assert await stored_messages(state, sid) == 4
            report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
            assert (report.released, report.sessions) == (1, 0)
            assert await archiver.store.info(key) is None
        else:
            # Still archived (rows put back already are skipped by the next restore).
            assert row.archived_at is not None
            assert await stored_messages(state, sid) == (4 if stop_after == "insert" else 0)
            # The next access finishes the restore.
            listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
            assert len(listed.json()["data"]) == 4
        await assert_live_and_whole(client, account, sid, before)
        row = await session_row(state, sid)
        assert (row.archived_at, row.archive_key) == (None, None)
        assert await stored_messages(state, sid) == 4


def test_the_default_archive_is_a_folder_under_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    assert settings.archive_location == (tmp_path / "data").resolve().as_uri()
    configured = Settings(_env_file=None, archive_url="s3://bucket/archive")  # type: ignore[call-arg]
    assert configured.archive_location == "s3://bucket/archive"


async def test_another_user_cannot_restore_or_read_an_archived_session(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    _, sid, _ = await archived_session(client, factory, state, archiver)
    other = await factory.account()
    for response in (
        await client.get(f"{API}/sessions/{sid}/messages", headers=other.headers),
        await client.post(
            f"{API}/sessions/{sid}/messages",
            json={"role": "user", "content": "x"},
            headers=other.headers,
        ),
        await client.post(f"{API}/sessions/{sid}/restore", headers=other.headers),
        await client.get(f"{API}/sessions/{sid}/export", headers=other.headers),
    ):
        assert_problem(response, 404, "session_not_found")
    assert (await session_row(state, sid)).archived_at is not None


async def test_the_account_export_reads_archived_sessions_from_the_archive(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, before = await archived_session(client, factory, state, archiver)
    response = await client.get(f"{API}/users/me/export", headers=account.headers)
    lines = [json.loads(line) for line in response.text.splitlines()]
    messages = [line["message"] for line in lines if line["type"] == "message"]
    assert messages == before["messages"]
    assert (await session_row(state, sid)).archived_at is not None  # not restored


async def test_deleting_a_session_or_the_account_deletes_archive_objects(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    deleted = await client.delete(f"{API}/sessions/{sid}", headers=account.headers)
    assert deleted.status_code == 200
    assert await listed_once_settled(state, []) == []
    assert await archiver.store.info(key) is None

    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    gone = await client.delete(f"{API}/users/me", headers=account.headers)
    assert gone.status_code == 204
    assert await listed_once_settled(state, []) == []
    assert await archiver.store.info(key) is None


async def test_an_account_deleted_while_the_store_is_slow_is_answered_and_refused_at_once(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    app_with: AppWith,
) -> None:
    """The objects were deleted after the commit but before the answer, and before the
    credentials' revocation: a store slower than REQUEST_TIMEOUT_SECONDS made the deletion a
    504 after it had committed, its revocation never ran, and the deleted user's API key went on
    working from the cache. The objects go in a task of their own now."""
    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    api_key = {"X-API-Key": (await factory.api_key(account))["key"]}
    async with app_with(request_timeout_seconds=1) as short:
        short.state.archive = _Deletes(archiver.store.url, hang=3.0)
        assert (await short.client.get(f"{API}/sessions", headers=api_key)).status_code == 200

        gone = await short.client.delete(f"{API}/users/me", headers=account.headers)

        assert gone.status_code == 204, gone.text
        refused = await short.client.get(f"{API}/sessions", headers=api_key)
        assert refused.status_code == 401
        assert await listed_once_settled(state, []) == []
    assert await archiver.store.info(key) is None


class _Deletes(ArchiveStore):
    """The store at `url`, refusing to delete the objects of `refused`, or deleting them and
    then taking `hang` seconds to answer (a slow DELETE)."""

    def __init__(self, url: str, refused: frozenset[str] = frozenset(), hang: float = 0.0) -> None:
        super().__init__(url)
        self.refused, self.hang = set(refused), hang
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        if key in self.refused:
            raise ArchiveUnavailable("The archive store failed: PermissionDenied")
        await super().delete(key)
        self.deleted.append(key)
        await asyncio.sleep(self.hang)


async def test_an_account_whose_second_object_is_refused_is_deleted_and_loses_nothing_kept(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The objects were deleted one by one before the rows: a refusal at the second answered
    503 and kept the account, whose first archived session had lost its only copy (every read
    of it a 503 for good). The rows go first now; the refused object stays listed."""
    account, first, _ = await archived_session(client, factory, state, archiver)
    second = await full_session(client, factory, account)
    await make_idle(state, second)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert report.sessions == 1
    keys = [await archive_key(state, sid) for sid in (first, second)]
    store = _Deletes(archiver.store.url, refused=frozenset({keys[1]}))
    monkeypatch.setattr(state, "archive", store)

    gone = await client.delete(f"{API}/users/me", headers=account.headers)

    assert gone.status_code == 204, gone.text
    async with state.sessionmaker() as db:
        assert await db.get(User, uuid.UUID(account.user_id)) is None
        assert await db.scalar(select(func.count()).select_from(ChatSession)) == 0
    assert await listed_once_settled(state, [keys[1]]) == [keys[1]]
    assert store.deleted == [keys[0]]
    assert await archiver.store.info(keys[1]) is not None


async def test_a_server_that_stops_finishes_the_deletions_under_way_first(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    app_with: AppWith,
) -> None:
    """A request's objects are deleted in a task of their own: the process stopped without
    waiting for it, which then wrote through the closed engine (a connection nobody closed)."""
    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    async with app_with() as stopping:
        stopping.state.archive = _Deletes(archiver.store.url, hang=1.0)
        deleted = await stopping.client.delete(f"{API}/sessions/{sid}", headers=account.headers)
        assert deleted.status_code == 200, deleted.text
    # Stopped: the deletion ended before the process's connections closed.
    assert await listed_deletions(state) == []
    assert await archiver.store.info(key) is None


async def test_a_purge_stopped_while_it_deletes_objects_leaves_them_listed(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """A purge stopped (Ctrl-C, SIGTERM) right after an object's deletion rolled its batch
    back: the session stayed, archived, its only copy gone. The rows are committed gone before
    any object is deleted, and what was not deleted yet stays listed for the next run."""
    sessions = [(await archived_session(client, factory, state, archiver))[1] for _ in range(2)]
    keys = sorted([await archive_key(state, sid) for sid in sessions])
    await make_idle(state, *sessions, days=400)
    slow = _Deletes(archiver.store.url, hang=30.0)

    purge = asyncio.create_task(
        retention.purge_idle_sessions(
            state.sessionmaker, timedelta(days=90), dry_run=False, archive=slow
        )
    )
    for _ in range(500):
        if slow.deleted:
            break
        await asyncio.sleep(0.01)
    purge.cancel()
    with pytest.raises(asyncio.CancelledError):
        await purge

    assert slow.deleted == keys[:1]
    async with state.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(ChatSession)) == 0
    assert await listed_deletions(state) == keys
    again = await retention.purge_idle_sessions(
        state.sessionmaker, timedelta(days=90), dry_run=False, archive=archiver.store
    )
    assert (again.sessions, again.objects.deleted, again.objects.refused) == (0, 2, 0)
    assert await listed_deletions(state) == []
    assert [await archiver.store.info(key) for key in keys] == [None, None]


async def test_a_read_that_restores_and_then_fails_still_releases_the_archive(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """A read restores in a transaction of its own; its object was deleted (and the key
    forgotten) only after the read committed, so a read answering an error left the restored
    session's stale copy in the store until an archive run."""
    account, sid, before = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)

    missing = await client.get(
        f"{API}/sessions/{sid}/messages",
        params={"after": str(uuid.uuid4())},
        headers=account.headers,
    )

    assert missing.status_code == 404, missing.text
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key) == (None, None)
    assert await archiver.store.info(key) is None
    await assert_live_and_whole(client, account, sid, before)


async def test_an_unreachable_store_is_a_503_and_changes_nothing(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.new_bucket()}/chat-store"
    archiver = Archiver(state.sessionmaker, ArchiveStore(url))
    monkeypatch.setattr(state, "archive", archiver.store)
    account, sid, before = await archived_session(client, factory, state, archiver)

    # The same bucket behind an address nothing listens on.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(state, "archive", ArchiveStore(url))
    for response in (
        await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers),
        await client.get(f"{API}/sessions/{sid}/export", headers=account.headers),
    ):
        assert_problem(response, 503, "archive_unavailable")
    row = await session_row(state, sid)
    assert row.archived_at is not None and row.message_count == 4

    monkeypatch.setattr(state, "archive", archiver.store)  # reachable again
    await assert_live_and_whole(client, account, sid, before)


async def test_deleting_while_the_store_is_away_deletes_its_object_once_it_is_back(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session's rows go at once; its object, which the store refuses to delete now, stays
    listed, and the next housekeeping run deletes it once the store answers again."""
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.new_bucket()}/chat-store"
    archiver = Archiver(state.sessionmaker, ArchiveStore(url))
    monkeypatch.setattr(state, "archive", archiver.store)
    account, sid, _ = await archived_session(client, factory, state, archiver)
    key = (await session_row(state, sid)).archive_key
    assert key is not None

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(state, "archive", ArchiveStore(url))
    deleted = await client.delete(f"{API}/sessions/{sid}", headers=account.headers)

    assert deleted.status_code == 200, deleted.text
    assert (await client.get(f"{API}/sessions/{sid}", headers=account.headers)).status_code == 404
    assert await archiver.store.info(key) is not None
    await archive_service.finish_deleting(within=30)  # the request's try, refused
    assert await listed_deletions(state) == [key]
    report = await archive_service.delete_listed(state.sessionmaker, archiver.store)
    assert (report.deleted, report.refused) == (1, 0)
    assert await archiver.store.info(key) is None
    assert await listed_deletions(state) == []


async def listed_deletions(state: AppState) -> list[str]:
    async with state.sessionmaker() as db:
        return sorted((await db.scalars(select(ArchiveDeletion.key))).all())


async def listed_once_settled(state: AppState, expected: list[str]) -> list[str]:
    """The listed objects, once they are `expected` or 5 s have passed: a request's objects
    are deleted in a task of their own, after its answer."""
    for _ in range(250):
        listed = await listed_deletions(state)
        if listed == expected:
            break
        await asyncio.sleep(0.02)
    return listed


async def test_a_store_that_cannot_be_opened_is_one_line_without_its_url(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store's error quotes the URL, its password included: it went into the 503's
    detail and, with a traceback a session, into the archive job's output."""
    secret = "Arch1vePassw0rd"
    store = ArchiveStore(f"ftp://archiver:{secret}@files.example.com/chat")
    monkeypatch.setattr(state, "archive", store)
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    await factory.message(account, sid, content="kept")
    await make_idle(state, sid)

    with caplog.at_level(logging.WARNING, logger="chat_store"):
        report = await archive_service.archive_idle_sessions(
            Archiver(state.sessionmaker, store), THRESHOLD, dry_run=False
        )

    assert report.failed == 1 and report.sessions == 0
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.exc_info is None, "one line, no traceback"
    assert "ARCHIVE_URL cannot be opened" in record.getMessage()
    assert secret not in caplog.text
    with pytest.raises(ArchiveUnavailable) as raised:
        await store.info("any")
    assert secret not in raised.value.detail and raised.value.__cause__ is None
    # Nothing moved: the session's messages are where they were.
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert [m["content"] for m in listed.json()["data"]] == ["kept"]


async def test_a_lease_left_on_an_ended_answer_keeps_no_session_from_the_archive(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """The session was due, then every run wrote and verified its object and gave up at the
    commit's own check, which still took any lease for a live one."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    answer = await client.post(
        f"{API}/sessions/{sid}/messages",
        json={"role": "assistant", "status": "complete", "content": "done"},
        headers=account.headers,
    )
    assert answer.status_code == 201, answer.text
    await make_idle(state, sid, days=400)
    await hold_lease(state, account, sid, answer.json()["id"], expires_in=-timedelta(days=1))

    dry = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=True)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)

    assert (dry.sessions, report.sessions, report.skipped) == (1, 1, 0)


# --- an archived message's id stays taken; the restore loses no message


async def archived_ids(state: AppState, sid: str) -> set[str]:
    async with state.sessionmaker() as db:
        result = await db.scalars(
            select(ArchivedMessage.message_id).where(ArchivedMessage.session_id == uuid.UUID(sid))
        )
        return {str(message_id) for message_id in result}


async def test_an_archived_messages_id_is_taken_for_every_user(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """Ids leak (shares, exports): another user who creates a message under an id of an
    archived one is refused, as for a stored one, and the restore brings every message back.
    (Accepted, the restore skipped the archived message and deleted the object, its only
    copy, while message_count still counted it.)"""
    account, sid, before = await archived_session(client, factory, state, archiver)
    ids = [message["id"] for message in before["messages"]]
    assert await archived_ids(state, sid) == set(ids)
    other = await factory.account()
    theirs = (await factory.chat_session(other))["id"]
    messages = f"{API}/sessions/{theirs}/messages"

    single = await client.post(
        messages, json={"id": ids[0], "role": "user", "content": "mine"}, headers=other.headers
    )
    batch = await client.post(
        f"{messages}/batch",
        json={"messages": [{"id": ids[1], "role": "user", "content": "mine too"}]},
        headers=other.headers,
    )

    assert_problem(single, 409, "message_exists")
    assert_problem(batch, 409, "message_exists")
    assert (await client.get(messages, headers=other.headers)).json()["data"] == []
    assert (await session_row(state, sid)).archived_at is not None
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert [message["id"] for message in listed.json()["data"]] == ids
    row = await session_row(state, sid)
    assert (row.archived_at, row.archive_key, row.message_count) == (None, None, 4)
    assert await archived_ids(state, sid) == set()  # the rows hold the ids again
    await assert_live_and_whole(client, account, sid, before)
    again = await client.post(
        messages, json={"id": ids[0], "role": "user", "content": "mine"}, headers=other.headers
    )
    assert_problem(again, 409, "message_exists")


class _Rival(NamedTuple):
    """An archived session (its owner, id, export from before and archive key), another
    account's session, and the id of the archived session's second message."""

    account: Account
    sid: str
    before: dict[str, Any]
    key: str
    other: Account
    theirs: str
    taken: str


async def _archived_beside_a_rival(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> _Rival:
    account, sid, before = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    other = await factory.account()
    theirs = (await factory.chat_session(other))["id"]
    return _Rival(account, sid, before, key, other, theirs, before["messages"][1]["id"])


async def test_a_restore_that_finds_an_id_taken_by_another_session_changes_nothing(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An id of the archive taken in the database by another session's message (a session
    archived before its ids were kept taken, or a row written by hand): the restore is refused
    and logged, the session stays archived with its object, instead of skipping the message
    and deleting its only copy. Once an operator settles it, the restore brings all back."""
    rival = await _archived_beside_a_rival(client, factory, state, archiver)
    account, sid, before, key = rival.account, rival.sid, rival.before, rival.key
    other, theirs, taken = rival.other, rival.theirs, rival.taken
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            insert(Message).values(
                id=uuid.UUID(taken),
                session_id=uuid.UUID(theirs),
                user_id=uuid.UUID(other.user_id),
                seq=1,
                role="user",
                status="complete",
                content="planted",
            )
        )

    with caplog.at_level(logging.ERROR, logger="chat_store"):
        listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
        restored = await client.post(f"{API}/sessions/{sid}/restore", headers=account.headers)

    for response in (listed, restored):
        body = assert_problem(response, 503, "archive_unavailable")
        assert "other messages have" in body["detail"] and theirs not in body["detail"]
    row = await session_row(state, sid)
    assert row.archived_at is not None and row.archive_key == key
    assert await archiver.store.info(key) is not None
    assert await stored_messages(state, sid) == 0
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 2 and f"{taken}: {theirs}" in logged[0] and key in logged[0]

    async with state.sessionmaker() as db, db.begin():
        await db.execute(delete(Message).where(Message.id == uuid.UUID(taken)))
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert listed.status_code == 200, listed.text
    await assert_live_and_whole(client, account, sid, before)
    assert await archiver.store.info(key) is None


async def test_a_restore_is_refused_when_another_archived_session_holds_an_id(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """The id is another session's archived message's (taken while this session was archived
    before its ids were kept): restored, this session's message would clash with it when the
    other comes back, and this one could not be archived again (its ids kept twice)."""
    rival = await _archived_beside_a_rival(client, factory, state, archiver)
    account, sid, before, key = rival.account, rival.sid, rival.before, rival.key
    theirs, taken = rival.theirs, rival.taken
    async with state.sessionmaker() as db, db.begin():
        # As a session archived before its ids were kept taken: none in archived_message.
        await db.execute(
            delete(ArchivedMessage).where(ArchivedMessage.session_id == uuid.UUID(sid))
        )
        await db.execute(
            insert(ArchivedMessage).values(
                message_id=uuid.UUID(taken), session_id=uuid.UUID(theirs)
            )
        )

    restored = await client.post(f"{API}/sessions/{sid}/restore", headers=account.headers)

    assert_problem(restored, 503, "archive_unavailable")
    assert await archiver.store.info(key) is not None
    assert await stored_messages(state, sid) == 0
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            delete(ArchivedMessage).where(ArchivedMessage.session_id == uuid.UUID(theirs))
        )
    await assert_live_and_whole(client, account, sid, before)


async def test_deleting_an_archived_session_forgets_its_ids(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, _ = await archived_session(client, factory, state, archiver)
    assert len(await archived_ids(state, sid)) == 4
    deleted = await client.delete(f"{API}/sessions/{sid}", headers=account.headers)
    assert deleted.status_code == 200
    assert await archived_ids(state, sid) == set()  # ON DELETE CASCADE


# --- an archive aborted after its upload leaves no object to no one


@pytest.mark.parametrize("deleted", ["session", "account"])
async def test_a_session_deleted_while_its_archive_uploads_leaves_no_object(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
    deleted: str,
) -> None:
    """The delete comes after the archive's last look at the session and before its upload
    completes: it deletes the (not yet written) object and the row; the upload then lands and
    the commit finds the session gone. The object is deleted then, else it would stay in the
    bucket for good, the deleted session's messages in it."""
    account = await factory.account()
    sid = await full_session(client, factory, account)
    await make_idle(state, sid)
    write = archiver.store.write
    uploading, go_on = asyncio.Event(), asyncio.Event()
    keys: list[str] = []

    async def write_held(key: str, chunks: AsyncIterator[bytes]) -> None:
        data = [chunk async for chunk in chunks]  # the session was checked as the last one came
        keys.append(key)
        uploading.set()
        await go_on.wait()

        async def again() -> AsyncIterator[bytes]:
            for chunk in data:
                yield chunk

        await write(key, again())

    monkeypatch.setattr(archiver.store, "write", write_held)
    job = asyncio.create_task(
        archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    )
    await asyncio.wait_for(uploading.wait(), 10)
    path = f"{API}/sessions/{sid}" if deleted == "session" else f"{API}/users/me"
    gone = await client.delete(path, headers=account.headers)
    assert gone.status_code in (200, 204), gone.text
    go_on.set()
    report = await asyncio.wait_for(job, 30)

    assert (report.sessions, report.skipped, report.failed) == (0, 1, 0)
    assert await archiver.store.info(keys[0]) is None


async def test_an_aborted_archive_keeps_the_object_of_a_session_that_has_its_key(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    """Changed while it was archived, the session is half-way (its key recorded): its object
    is the job's to archive again or release; archived by another run meanwhile, its object
    is the only copy of its messages."""
    account = await factory.account()
    sid = await full_session(client, factory, account)
    before = await exported(client, account, sid)
    await make_idle(state, sid)
    cutoff = datetime.now(UTC) - THRESHOLD
    plan = await archive_service.begin_archive(archiver, uuid.UUID(sid), cutoff)
    assert plan is not None
    verified = await archive_service.verify_archive(
        archiver, await archive_service.write_archive(archiver, plan)
    )
    await archive_service.commit_archive(archiver, verified)  # another run's, the same key
    with pytest.raises(ArchiveAborted):
        await archive_service.commit_archive(archiver, verified)
    assert not await archive_service.abandon_archive(archiver, plan)
    assert await archiver.store.info(plan.key) is not None
    await assert_live_and_whole(client, account, sid, before)


# --- generations go with their messages


async def plant_generation(state: AppState, account: Account, sid: str, message_id: str) -> None:
    """A generated answer's generation, as its turn left it: no process holds it."""
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with state.sessionmaker() as db, db.begin():
        values = {
            "message_id": uuid.UUID(message_id),
            "session_id": uuid.UUID(sid),
            "user_id": uuid.UUID(account.user_id),
            "owner": None,
            "lease_expires_at": None,
            "attempt": 3,
            "params": {"model": "gpt-4o", "temperature": 0.2, "tools": [{"type": "function"}]},
            "created_at": created,
            "updated_at": created + timedelta(seconds=1),
        }
        assert await generation_crud.insert_generation(db, values)


async def generation_of(state: AppState, message_id: str) -> Generation | None:
    async with state.sessionmaker() as db:
        return await generation_crud.get(db, uuid.UUID(message_id))


async def test_an_archive_carries_the_generations_and_the_restore_puts_them_back(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account = await factory.account()
    sid = await full_session(client, factory, account)
    before = await exported(client, account, sid)
    failed = next(m for m in before["messages"] if m["status"] == "failed")
    await plant_generation(state, account, sid, failed["id"])
    planted = await generation_of(state, failed["id"])
    assert planted is not None
    await make_idle(state, sid)
    report = await archive_service.archive_idle_sessions(archiver, THRESHOLD, dry_run=False)
    assert report.sessions == 1
    assert await generation_of(state, failed["id"]) is None  # gone with its message

    document = json.loads(gzip.decompress(await archiver.store.read(await archive_key(state, sid))))
    assert [g["message_id"] for g in document["generations"]] == [failed["id"]]
    assert comparable(document) == comparable(before)  # the export's members as they were
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert listed.status_code == 200

    restored = await generation_of(state, failed["id"])
    assert restored is not None
    kept = ("message_id", "session_id", "user_id", "owner", "lease_expires_at", "attempt")
    for name in (*kept, "params", "created_at", "updated_at"):
        assert getattr(restored, name) == getattr(planted, name), name
    await assert_live_and_whole(client, account, sid, before)


async def test_an_archive_written_before_it_carried_generations_still_restores(
    client: httpx.AsyncClient, factory: Factory, state: AppState, archiver: Archiver
) -> None:
    account, sid, before = await archived_session(client, factory, state, archiver)
    key = await archive_key(state, sid)
    document = json.loads(gzip.decompress(await archiver.store.read(key)))
    del document["generations"]

    async def old_object() -> AsyncIterator[bytes]:
        yield gzip.compress(json.dumps(document).encode())

    await archiver.store.write(key, old_object())
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert listed.status_code == 200, listed.text
    await assert_live_and_whole(client, account, sid, before)


@pytest.mark.parametrize("change", ["PATCH", "DELETE"])
async def test_a_change_that_finds_its_session_archived_meanwhile_restores_it(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    archiver: Archiver,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """The archive commits between the request's look at the session (not archived) and its
    change: the change's own statement finds it archived, and the session answered 404. Its
    messages come back and the change is made, as an append's are."""
    account, sid, before = await archived_session(client, factory, state, archiver)
    looked: list[str] = []

    async def not_yet(db: Any, user_id: Any, session_id: Any) -> bool:
        looked.append(str(session_id))  # as it was when the request looked
        return False

    monkeypatch.setattr(archive_crud, "is_archived", not_yet)
    target = before["messages"][1]["id"]
    url = f"{API}/sessions/{sid}/messages/{target}"
    if change == "PATCH":
        answer = await client.patch(url, json={"metadata": {"k": 1}}, headers=account.headers)
    else:
        answer = await client.delete(url, headers=account.headers)

    assert answer.status_code == 200, answer.text
    assert looked == [sid]
    assert (await session_row(state, sid)).archived_at is None
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    ids = [message["id"] for message in listed.json()["data"]]
    expected = [m["id"] for m in before["messages"]]
    assert ids == (expected if change == "PATCH" else [i for i in expected if i != target])
