"""`chat-store import`, `seed`, `archive` and `restore`, run as the real command (a subprocess
on the test backend), each twice: the second run duplicates nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from chat_store.api.deps import AppState
from chat_store.settings import Settings
from tests.api.test_archive import make_idle, session_row, stored_messages
from tests.api.test_export_import import chatgpt_conversation
from tests.backends import Backend
from tests.factories import API, Factory


async def chat_store(
    backend: Backend, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    # Settings the developer's shell may hold are dropped: the command sees only the backend.
    names = {name.upper() for name in Settings.model_fields}
    environment = {key: value for key, value in os.environ.items() if key.upper() not in names}
    environment.update(
        APP_ENV="test",
        DATABASE_URL=backend.database_url,
        DATA_DIR=str(backend.data_dir),
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        **env,
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chat_store.cli", *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def titles(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    listed = await client.get(f"{API}/sessions?limit=100&order=asc", headers=headers)
    return [session["title"] for session in listed.json()["data"]]


async def test_import_a_chatgpt_file_twice(
    backend: Backend, client: httpx.AsyncClient, factory: Factory, tmp_path: Path
) -> None:
    account = await factory.account()
    second = chatgpt_conversation()
    second.update(title="Second", conversation_id="conv-2")
    broken = chatgpt_conversation()
    broken.update(title="Broken", current_node="missing")
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([chatgpt_conversation(), broken, second]))

    first_run = await chat_store(backend, tmp_path, "import", str(path), "--user", account.email)
    assert first_run.returncode == 1, first_run.stderr  # one conversation failed
    assert "imported 2 sessions (4 messages), 0 imported before, 1 failed" in first_run.stdout
    assert "#2 (Broken)" in first_run.stderr and "current_node" in first_run.stderr
    assert await titles(client, account.headers) == ["Clock in tests", "Second"]

    again = await chat_store(backend, tmp_path, "import", str(path), "--user", account.email)
    assert "imported 0 sessions (0 messages), 2 imported before, 1 failed" in again.stdout
    assert await titles(client, account.headers) == ["Clock in tests", "Second"]

    unknown = await chat_store(backend, tmp_path, "import", str(path), "--user", "no@x.org")
    assert unknown.returncode == 1 and "No user with email no@x.org" in unknown.stderr
    no_owner = await chat_store(backend, tmp_path, "import", str(path))
    assert no_owner.returncode == 2 and "--user" in no_owner.stderr


async def test_import_an_account_export_twice(
    backend: Backend, client: httpx.AsyncClient, factory: Factory, tmp_path: Path
) -> None:
    source, target = await factory.account(), await factory.account()
    for title, count in (("one", 3), ("two", 0), ("three", 2)):
        session = await factory.chat_session(source, title=title)
        await factory.messages(source, session["id"], count)
    exported = await client.get(f"{API}/users/me/export", headers=source.headers)
    path = tmp_path / "account.jsonl"
    path.write_bytes(exported.content)

    run = await chat_store(backend, tmp_path, "import", str(path), "--user", target.email)
    assert run.returncode == 0, run.stderr
    assert "imported 3 sessions (5 messages), 0 imported before, 0 failed" in run.stdout
    again = await chat_store(backend, tmp_path, "import", str(path), "--user", target.email)
    assert "imported 0 sessions (0 messages), 3 imported before, 0 failed" in again.stdout
    assert await titles(client, target.headers) == ["one", "two", "three"]
    # Without --user, the export's own account; its sessions were not imported there.
    own = await chat_store(backend, tmp_path, "import", str(path))
    assert "imported 3 sessions" in own.stdout
    assert len(await titles(client, source.headers)) == 6


def seed_file(path: Path, key: str) -> None:
    document: dict[str, Any] = {
        "users": [
            {
                "email": "Ada@Example.com",
                "password": "correct horse battery",
                "display_name": "Ada",
                "api_keys": [{"name": "ci", "key": key}, {"name": "laptop"}],
                "sessions": [
                    {"title": "Welcome", "messages": [{"role": "user", "content": "hi"}]},
                    chatgpt_conversation(),
                ],
            },
            {"email": "bob@example.com", "password": "another password", "sessions": []},
        ]
    }
    path.write_text(json.dumps(document))


async def test_seed_twice_adds_nothing_the_second_time(
    backend: Backend, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = "csk_" + "s" * 40
    path = tmp_path / "seed.json"
    seed_file(path, key)

    first = await chat_store(backend, tmp_path, "seed", str(path))
    assert first.returncode == 0, first.stderr
    generated = [line.split("\t") for line in first.stdout.splitlines()]
    assert [(email, name) for email, name, _ in generated] == [("ada@example.com", "laptop")]
    assert "users: 2 created, 0 found; API keys: 2 created, 0 found; sessions: 2 created" in (
        first.stderr
    )
    # The keys work, the given one and the generated one, for the same user.
    for secret in (key, generated[0][2]):
        me = await client.get(f"{API}/users/me", headers={"X-API-Key": secret})
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    assert await titles(client, {"X-API-Key": key}) == ["Welcome", "Clock in tests"]
    login = await client.post(
        f"{API}/auth/token",
        data={"username": "bob@example.com", "password": "another password"},
    )
    assert login.status_code == 200

    again = await chat_store(backend, tmp_path, "seed", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""  # no new secret
    assert "users: 0 created, 2 found; API keys: 0 created, 2 found; sessions: 0 created, 2" in (
        again.stderr
    )
    keys = await client.get(f"{API}/api-keys", headers={"X-API-Key": key})
    assert sorted(k["name"] for k in keys.json()["data"]) == ["ci", "laptop"]
    assert await titles(client, {"X-API-Key": key}) == ["Welcome", "Clock in tests"]


async def test_archive_and_restore_commands(
    backend: Backend,
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    tmp_path: Path,
) -> None:
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    await factory.messages(account, sid, 3)
    await make_idle(state, sid)
    archive_url = {"ARCHIVE_URL": (tmp_path / "archive").as_uri()}

    dry = await chat_store(
        backend, tmp_path, "archive", "--older-than", "90d", "--dry-run", **archive_url
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would archive 1 sessions and 3 messages idle since ")
    assert (await session_row(state, sid)).archived_at is None

    run = await chat_store(backend, tmp_path, "archive", "--older-than", "90d", **archive_url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("archived 1 sessions and 3 messages")
    row = await session_row(state, sid)
    assert row.archived_at is not None and row.archive_key is not None
    assert (tmp_path / "archive" / row.archive_key).is_file()
    again = await chat_store(backend, tmp_path, "archive", "--older-than", "90d", **archive_url)
    assert again.stdout.startswith("archived 0 sessions and 0 messages")

    restored = await chat_store(backend, tmp_path, "restore", sid, **archive_url)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == "restored"
    assert await stored_messages(state, sid) == 3
    assert not (tmp_path / "archive" / row.archive_key).exists()
    twice = await chat_store(backend, tmp_path, "restore", sid, **archive_url)
    assert twice.stdout.strip() == "not archived: nothing to do"

    # Purged, an archived session's object goes with its row.
    sid = (await factory.chat_session(account))["id"]
    await factory.messages(account, sid, 3)
    await make_idle(state, sid)
    archived = await chat_store(backend, tmp_path, "archive", "--older-than", "90d", **archive_url)
    assert archived.stdout.startswith("archived 1 sessions"), archived.stdout
    key = (await session_row(state, sid)).archive_key
    assert key is not None and (tmp_path / "archive" / key).is_file()
    purged = await chat_store(backend, tmp_path, "purge", "--older-than", "90d", **archive_url)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("deleted 2 sessions and 6 messages")  # the restored one too
    listed = await client.get(f"{API}/sessions/{sid}", headers=account.headers)
    assert listed.status_code == 404
    assert not (tmp_path / "archive" / key).exists()
