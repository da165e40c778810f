"""Housekeeping and the admin commands: retention spares an answer being generated and gets
past an archive object it cannot delete; `chat-store import` fails a broken session of a JSONL
export alone; `chat-store seed` shows each key it stored."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, update

from chat_store.api.deps import AppState
from chat_store.errors import ArchiveUnavailable
from chat_store.models import ApiKey, ChatSession, User
from chat_store.services import retention
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


class _OneUndeletable:
    """An archive store that refuses to delete one object (a lock on it, another owner)."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        if key == self.refused:
            raise ArchiveUnavailable("The archive store failed: PermissionDenied")
        self.deleted.append(key)


async def test_an_archive_object_that_cannot_be_deleted_holds_back_its_session_alone(
    factory: Factory, state: AppState
) -> None:
    """The batch rolled back on it and the purge stopped: every run chose the same oldest
    batch again, and no idle session was ever deleted."""
    account = await factory.account()
    stuck = (await factory.chat_session(account, title="archived long ago"))["id"]
    others = [(await factory.chat_session(account, title=f"idle {i}"))["id"] for i in range(3)]
    archived = (await factory.chat_session(account, title="archived too"))["id"]
    await make_idle(state, stuck, days=400)
    await make_idle(state, *others, archived, days=200)
    keys = {sid: f"chat_archives/2025/01/{sid}.json.gz" for sid in (stuck, archived)}
    async with state.sessionmaker() as db, db.begin():
        for sid, key in keys.items():
            await db.execute(
                update(ChatSession).where(ChatSession.id == uuid.UUID(sid)).values(archive_key=key)
            )
    store = _OneUndeletable(keys[stuck])

    report = await retention.purge_idle_sessions(
        state.sessionmaker,
        timedelta(days=90),
        dry_run=False,
        archive=store,  # type: ignore[arg-type]
    )

    assert (report.sessions, report.kept) == (4, 1)
    assert store.deleted == [keys[archived]]
    async with state.sessionmaker() as db:
        left = {str(sid) for sid in await db.scalars(select(ChatSession.id))}
    assert stuck in left and not left & {*others, archived}


async def test_a_broken_line_of_a_jsonl_export_fails_its_session_alone(
    backend: Backend, client: httpx.AsyncClient, factory: Factory, tmp_path: Path
) -> None:
    """The command stopped at the line with a traceback's last words: the sessions after it
    were not imported, and nothing said which one failed."""
    source, target = await factory.account(), await factory.account()
    for title in ("one", "two", "three"):
        session = await factory.chat_session(source, title=title)
        await factory.messages(source, session["id"], 1)
    exported = await client.get(f"{API}/users/me/export", headers=source.headers)
    lines = exported.text.splitlines(keepends=True)
    assert json.loads(lines[3])["session"]["title"] == "two"
    lines[4] = lines[4][: len(lines[4]) // 2] + "\n"  # the message line of "two", cut short
    path = tmp_path / "account.jsonl"
    path.write_text("".join(lines))

    run = await chat_store(backend, tmp_path, "import", str(path), "--user", target.email)

    assert run.returncode == 1, run.stderr
    assert "imported 2 sessions" in run.stdout and "1 failed" in run.stdout, run.stdout
    assert "#2 (two)" in run.stderr and "line 5" in run.stderr, run.stderr
    assert await titles(client, target.headers) == ["one", "three"]


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
