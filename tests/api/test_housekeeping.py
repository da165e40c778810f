"""Housekeeping and the admin commands: retention spares an answer being generated and gets
past an archive object it cannot delete (it stays listed for the next run); `chat-store
import` fails a broken session of a JSONL export alone; `chat-store seed` shows each key it
stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from chat_store.api.deps import AppState
from chat_store.crud import archive as archive_crud
from chat_store.errors import ArchiveUnavailable
from chat_store.models import ApiKey, ArchiveDeletion, ChatSession, User
from chat_store.services import archive as archive_service
from chat_store.services import maintenance, retention
from tests.api.test_archive import hold_lease, make_idle
from tests.api.test_cli_portability import chat_store, titles
from tests.backends import Backend
from tests.factories import API, Factory


async def test_retention_keeps_a_session_whose_answer_is_being_generated(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A continue does not move the session's activity: retention deleted the conversation
    under the answer being written into it (the archive job already spared it)."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    url = f"{API}/sessions/{sid}/messages"
    await client.post(url, json={"role": "user", "content": "q"}, headers=account.headers)
    answer = await client.post(
        url,
        json={"role": "assistant", "status": "in_progress", "partial_content": "a"},
        headers=account.headers,
    )
    assert answer.status_code == 201, answer.text
    await make_idle(state, sid)
    await hold_lease(state, account, sid, answer.json()["id"])

    dry = await retention.purge_idle_sessions(state.sessionmaker, timedelta(days=90), dry_run=True)
    report = await retention.purge_idle_sessions(
        state.sessionmaker, timedelta(days=90), dry_run=False
    )

    assert (dry.sessions, report.sessions) == (0, 0)
    async with state.sessionmaker() as db:
        assert await db.get(ChatSession, uuid.UUID(sid)) is not None


@pytest.mark.parametrize(
    ("status", "ran_out_days_ago", "kept"),
    [
        ("in_progress", 1, True),  # a sweep continues it
        ("in_progress", 200, False),  # no process has continued it for longer than the idle time
        ("complete", 1, False),  # a lease left on an answer that ended
    ],
)
async def test_retention_is_held_back_only_by_an_open_answer_with_a_recent_lease(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    status: str,
    ran_out_days_ago: int,
    kept: bool,
) -> None:
    """A lease left on an ended answer, or one no process has continued since the session
    went idle (a server without a provider), kept the session forever."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    fields = {"content": "done"} if status == "complete" else {"partial_content": "a"}
    answer = await client.post(
        f"{API}/sessions/{sid}/messages",
        json={"role": "assistant", "status": status, **fields},
        headers=account.headers,
    )
    assert answer.status_code == 201, answer.text
    await make_idle(state, sid, days=400)
    await hold_lease(
        state, account, sid, answer.json()["id"], expires_in=-timedelta(days=ran_out_days_ago)
    )

    report = await retention.purge_idle_sessions(
        state.sessionmaker, timedelta(days=90), dry_run=False
    )

    assert report.sessions == (0 if kept else 1)


async def record_archive_keys(state: AppState, *session_ids: str) -> dict[str, str]:
    """Mark the sessions as archived long ago: each with the key of its archive object."""
    keys = {sid: f"chat_archives/2025/01/{sid}.json.gz" for sid in session_ids}
    async with state.sessionmaker() as db, db.begin():
        for sid, key in keys.items():
            await db.execute(
                update(ChatSession).where(ChatSession.id == uuid.UUID(sid)).values(archive_key=key)
            )
    return keys


class _SomeUndeletable:
    """An archive store that refuses to delete some objects, and deletes the others."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.deleted: list[str] = []
        self.asked: list[str] = []

    async def delete(self, key: str) -> None:
        self.asked.append(key)
        if key in self.refused:
            raise ArchiveUnavailable("The archive store failed: PermissionDenied")
        self.deleted.append(key)


class _Refusing:
    """An archive store that refuses every deletion (away, or no rights)."""

    def __init__(self) -> None:
        self.asked = 0

    async def delete(self, key: str) -> None:
        self.asked += 1
        raise ArchiveUnavailable("The archive store failed: PermissionDenied")


async def test_an_archive_object_that_cannot_be_deleted_holds_back_only_itself(
    factory: Factory, state: AppState
) -> None:
    """The sessions go whatever their objects: an object the store refuses (a lock on it)
    stays listed for the next run, and the others are deleted. Before, its batch was rolled
    back and every run chose that batch again; later, objects deleted before a refusal were
    left to sessions whose rows stayed."""
    account = await factory.account()
    stuck = (await factory.chat_session(account, title="archived long ago"))["id"]
    others = [(await factory.chat_session(account, title=f"idle {i}"))["id"] for i in range(3)]
    archived = (await factory.chat_session(account, title="archived too"))["id"]
    await make_idle(state, stuck, days=400)
    await make_idle(state, *others, archived, days=200)
    keys = await record_archive_keys(state, stuck, archived)
    store = _SomeUndeletable({keys[stuck]})

    report = await _purge(state, store)

    assert report.sessions == 5
    assert (report.objects.deleted, report.objects.refused) == (1, 1)
    assert report.objects.reason == "The archive store failed: PermissionDenied"
    assert store.deleted == [keys[archived]]
    assert await _sessions(state) == set()
    assert await _listed(state) == [keys[stuck]]

    # The next run tries it again, and the store lets it go now.
    store.refused.clear()
    again = await _purge(state, store)
    assert (again.sessions, again.objects.deleted, again.objects.refused) == (0, 1, 0)
    assert await _listed(state) == []


async def test_refusals_in_a_row_stop_a_run_and_the_next_goes_on(
    factory: Factory, state: AppState
) -> None:
    """A store that refuses as a whole (away, no rights) is not asked for every object: each
    try waits through its retries. The sessions are deleted all the same."""
    account = await factory.account()
    archived = [(await factory.chat_session(account, title=f"a{i}"))["id"] for i in range(5)]
    await make_idle(state, *archived, days=400)
    keys = await record_archive_keys(state, *archived)
    store = _Refusing()

    report = await _purge(state, store)

    assert report.sessions == 5
    assert (report.objects.deleted, report.objects.refused, store.asked) == (0, 3, 3)
    assert await _sessions(state) == set()
    assert await _listed(state) == sorted(keys.values())

    back = _SomeUndeletable(set())
    again = await _purge(state, back)
    assert (again.objects.deleted, again.objects.refused) == (5, 0)
    assert sorted(back.deleted) == sorted(keys.values())
    assert await _listed(state) == []


async def test_objects_the_store_keeps_refusing_hold_back_no_other(state: AppState) -> None:
    """Each run began with the same smallest keys: three the store refuses for good stopped
    every run before the others. Refused ones are tried again after those never tried."""
    locked = [f"chat_archives/2026/01/{i}.json.gz" for i in range(3)]
    others = [f"chat_archives/2026/12/{i}.json.gz" for i in range(5)]
    async with state.sessionmaker() as db, db.begin():
        await archive_crud.queue_deletions(db, locked + others, datetime.now(UTC))
    store = _SomeUndeletable(set(locked))

    first = await archive_service.delete_listed(state.sessionmaker, store)  # type: ignore[arg-type]
    second = await archive_service.delete_listed(state.sessionmaker, store)  # type: ignore[arg-type]

    assert (first.deleted, first.refused) == (0, 3)  # the store as a whole refuses, it seems
    assert (second.deleted, second.refused) == (5, 3)
    assert store.deleted == others
    assert await _listed(state) == locked


async def test_a_housekeeping_run_goes_over_the_listed_objects_once(
    factory: Factory, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deleted the objects of its sessions itself, after the run's own step for the
    listed ones: an object the store refuses was asked for twice a run, each refusal waiting
    through the store's retries. Retention lists its objects, and one step deletes them all."""
    account = await factory.account()
    idle = (await factory.chat_session(account, title="archived long ago"))["id"]
    await make_idle(state, idle, days=400)
    keys = await record_archive_keys(state, idle)
    locked = "chat_archives/2026/01/locked.json.gz"
    async with state.sessionmaker() as db, db.begin():
        await archive_crud.queue_deletions(db, [locked], datetime.now(UTC))
    store = _SomeUndeletable({locked})
    monkeypatch.setattr(maintenance, "FIRST_RUN_SECONDS", 0.0)
    archiver = archive_service.Archiver(state.sessionmaker, store)  # type: ignore[arg-type]

    run = asyncio.create_task(maintenance.run_forever(state.sessionmaker, 90, archiver=archiver))
    try:
        for _ in range(250):
            if await _sessions(state) == set() and store.deleted:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the run's steps after, if any
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    assert store.deleted == [keys[idle]]
    assert store.asked.count(locked) == 1
    assert await _listed(state) == [locked]


async def _purge(state: AppState, store: object) -> retention.PurgeReport:
    return await retention.purge_idle_sessions(
        state.sessionmaker,
        timedelta(days=90),
        dry_run=False,
        archive=store,  # type: ignore[arg-type]
    )


async def _sessions(state: AppState) -> set[str]:
    async with state.sessionmaker() as db:
        return {str(sid) for sid in await db.scalars(select(ChatSession.id))}


async def _listed(state: AppState) -> list[str]:
    async with state.sessionmaker() as db:
        return list(await db.scalars(select(ArchiveDeletion.key).order_by(ArchiveDeletion.key)))


@pytest.mark.parametrize(
    ("cut", "says"),
    [
        (5, "line 6: a message that cannot be read"),  # a message line of "two"
        (4, "line 5: the session record cannot be read"),  # the session line of "two"
        (-4, "line 5: messages of a session whose record is missing"),  # "two"'s, left out
    ],
    ids=["a message line", "a session line", "a session line left out"],
)
async def test_a_broken_line_of_a_jsonl_export_fails_its_session_alone(
    backend: Backend,
    client: httpx.AsyncClient,
    factory: Factory,
    tmp_path: Path,
    cut: int,
    says: str,
) -> None:
    """The command stopped at the line with a traceback's last words: the sessions after it
    were not imported, and nothing said which one failed. A cut session line is told apart
    from a cut message line by the session its next message names."""
    source, target = await factory.account(), await factory.account()
    for title in ("one", "two", "three"):
        session = await factory.chat_session(source, title=title)
        await factory.messages(source, session["id"], 2)
    exported = await client.get(f"{API}/users/me/export", headers=source.headers)
    lines = exported.text.splitlines(keepends=True)
    assert json.loads(lines[4])["session"]["title"] == "two"
    if cut < 0:  # the line is not there at all: "two"'s messages follow "one"'s
        del lines[-cut]
    else:
        lines[cut] = lines[cut][: len(lines[cut]) // 2] + "\n"
    path = tmp_path / "account.jsonl"
    path.write_text("".join(lines))

    run = await chat_store(backend, tmp_path, "import", str(path), "--user", target.email)

    assert run.returncode == 1, run.stderr
    assert "imported 2 sessions (4 messages)" in run.stdout and "1 failed" in run.stdout, run.stdout
    assert says in run.stderr, run.stderr
    assert await titles(client, target.headers) == ["one", "three"]


async def test_a_cut_first_session_line_is_told_not_skipped(
    backend: Backend, client: httpx.AsyncClient, factory: Factory, tmp_path: Path
) -> None:
    """Nothing was being read yet: the session and its messages went without a word, and the
    command said 0 failed."""
    source, target = await factory.account(), await factory.account()
    for title in ("one", "two"):
        session = await factory.chat_session(source, title=title)
        await factory.messages(source, session["id"], 1)
    exported = await client.get(f"{API}/users/me/export", headers=source.headers)
    lines = exported.text.splitlines(keepends=True)
    assert json.loads(lines[1])["session"]["title"] == "one"
    lines[1] = lines[1][:20] + "\n"
    path = tmp_path / "account.jsonl"
    path.write_text("".join(lines))

    run = await chat_store(backend, tmp_path, "import", str(path), "--user", target.email)

    assert run.returncode == 1, run.stderr
    assert "imported 1 sessions" in run.stdout and "1 failed" in run.stdout, run.stdout
    assert await titles(client, target.headers) == ["two"]


async def test_seed_shows_the_keys_it_stored_before_a_later_user_failed(
    backend: Backend, state: AppState, tmp_path: Path
) -> None:
    """The secrets were printed after the last user: a later failure left a key stored whose
    secret nobody saw, and a run again found the key and showed nothing."""
    path = tmp_path / "seed.json"
    first = {
        "email": "seedfirst@example.com",
        "password": "long enough pw",
        "api_keys": [{"name": "laptop"}],
    }
    broken = {
        "email": "seedsecond@example.com",
        "password": "long enough pw",
        "sessions": [{"messages": [{"role": "nobody", "content": "x"}]}],
    }
    path.write_text(json.dumps({"users": [first, broken]}))

    run = await chat_store(backend, tmp_path, "seed", str(path))

    assert run.returncode == 1, run.stderr
    async with state.sessionmaker() as db:
        stored = await db.scalar(
            select(ApiKey.id)
            .join(User, User.id == ApiKey.user_id)
            .where(User.email == "seedfirst@example.com", ApiKey.name == "laptop")
        )
    assert stored is not None
    printed = [line.split("\t") for line in run.stdout.splitlines() if "\t" in line]
    assert [(email, name) for email, name, _ in printed] == [("seedfirst@example.com", "laptop")]
