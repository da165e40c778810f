"""Export, archive and restore at size, against a real server process.

    .venv/bin/chat-store migrate        # with DATABASE_URL set: the schema must be there
    DATABASE_URL=postgresql://... .venv/bin/python scripts/bench_archive.py \\
        --messages 1000000 --session-messages 10000 --reads 20

Starts `chat-store serve` on a free port (ARCHIVE_URL: a temporary folder unless set), registers
a user of its own and fills the account with --messages messages in sessions of 1,000 (bulk
inserts straight into the database: the fill is not what is measured). Then:

1. account export: GET /users/me/export streamed to the end and counted; messages per second,
   and the server's VmRSS before and at its peak (sampled every 20 ms): it must not grow with
   the export.
2. archive of one session of --session-messages messages (the job's four steps, in this
   process, on the same store) and its restore (POST /sessions/{id}/restore): seconds each way.
3. a read of an archived session, restore included (GET .../messages?order=desc&limit=50
   right after archiving it again), --reads times: p50 and p95.

Rows are left in the database (they belong to the run's own user).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.db import create_engine, create_sessionmaker
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from chat_store.services import archive as archive_service
from chat_store.settings import Settings
from chat_store.storage import ArchiveStore

API = "/api/v1"
PER_SESSION = 1000
TEXT = "The fixture uses a fixed clock; the CI runner's clock is hours ahead. " * 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str


def start_server(database_url: str, archive_url: str, data_dir: Path) -> Server:
    port = _free_port()
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(
        APP_ENV="production",
        DATABASE_URL=database_url,
        ARCHIVE_URL=archive_url,
        DATA_DIR=str(data_dir),
        JWT_SECRET=secrets.token_urlsafe(40),
        RATE_LIMIT_ENABLED="false",
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="4",
    )
    command = [sys.executable, "-m", "chat_store.cli", "serve", "--no-migrate", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(process, url)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the server did not start")


def _message_rows(session_id: uuid.UUID, user_id: uuid.UUID, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for seq in range(1, count + 1):
        text = f"{seq}: {TEXT}"
        rows.append(
            {
                "id": uuid7(),
                "session_id": session_id,
                "user_id": user_id,
                "seq": seq,
                "role": "user" if seq % 2 else "assistant",
                "content": text,
                "partial_content": None,
                "partial_length": len(text),
                "partial_bytes": len(text.encode()),
                "status": "complete",
                "error_message": None,
                "context": None,
                "metadata": {"n": seq},
                "token_count": 60,
                "model": None if seq % 2 else "gpt-4o",
                "latency_ms": None,
                "created_version": seq,
                "version": seq,
                "created_at": now,
                "updated_at": now,
                "completed_at": now,
                "tool_calls": None,
                "tool_call_id": None,
            }
        )
    return rows


async def fill(settings: Settings, user_id: uuid.UUID, sizes: list[int]) -> list[uuid.UUID]:
    """Sessions of the given sizes, with exact counters, inserted in bulk."""
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    ids = []
    try:
        for size in sizes:
            session_id = uuid7()
            now = datetime.now(UTC)
            values = {
                "id": session_id,
                "user_id": user_id,
                "title": f"bench {size}",
                "is_favorite": False,
                "status": "active",
                "metadata": {},
                "message_count": size,
                "total_tokens": 60 * size,
                "last_seq": size,
                "history_version": size,
                "updated_version": 0,
                "last_message_at": now,
                "last_activity_at": now,
                "created_at": now,
                "updated_at": now,
            }
            async with sessionmaker() as db, db.begin():
                await db.execute(ChatSession.__table__.insert().values(**values))
                rows = _message_rows(session_id, user_id, size)
                messages = [StoredMessage.from_columns(row) for row in rows]
                await message_crud.insert_messages(db, messages)
            ids.append(session_id)
    finally:
        await engine.dispose()
    return ids


async def account_export(server: Server, headers: dict[str, str]) -> None:
    pid = server.process.pid
    before = _rss_mb(pid)
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    messages = 0
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=None) as client,
        client.stream("GET", f"{API}/users/me/export", headers=headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith('{"type":"message"'):
                messages += 1
    elapsed = time.perf_counter() - started
    done.set()
    await sampler
    print(
        f"account export: {messages} messages in {elapsed:.1f} s = {messages / elapsed:,.0f} "
        f"messages/s; server RSS {before:.1f} MB before, {peak:.1f} MB peak"
    )


async def archive_once(settings: Settings, store: ArchiveStore, session_id: uuid.UUID) -> float:
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as db, db.begin():
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == session_id)
                .values(last_activity_at=datetime.now(UTC) - timedelta(days=400), restored_at=None)
            )
        archiver = archive_service.Archiver(sessionmaker, store)
        started = time.perf_counter()
        archived = await archive_service.archive_session(
            archiver, session_id, datetime.now(UTC) - timedelta(days=1)
        )
        assert archived is not None, "not archived"
        return time.perf_counter() - started
    finally:
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    database_url = os.environ["DATABASE_URL"]
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        archive_url = os.environ.get("ARCHIVE_URL") or (Path(tmp) / "archive").as_uri()
        settings = Settings(_env_file=None, database_url=database_url, data_dir=Path(tmp))  # type: ignore[call-arg]
        server = start_server(database_url, archive_url, Path(tmp))
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                email = f"bench-{secrets.token_hex(4)}@example.com"
                user = await client.post(
                    f"{API}/auth/register", json={"email": email, "password": "bench-password"}
                )
                token = await client.post(
                    f"{API}/auth/token", data={"username": email, "password": "bench-password"}
                )
                bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
                key = await client.post(f"{API}/api-keys", json={"name": "bench"}, headers=bearer)
                headers = {"X-API-Key": key.json()["key"]}
                user_id = uuid.UUID(user.json()["id"])

                sizes = [PER_SESSION] * (args.messages // PER_SESSION)
                if args.messages % PER_SESSION:
                    sizes.append(args.messages % PER_SESSION)
                started = time.perf_counter()
                await fill(settings, user_id, sizes)
                print(f"filled {args.messages} messages in {time.perf_counter() - started:.1f} s")
                await account_export(server, headers)

                (big,) = await fill(settings, user_id, [args.session_messages])
                store = ArchiveStore(archive_url)
                archive_seconds = await archive_once(settings, store, big)
                started = time.perf_counter()
                restored = await client.post(f"{API}/sessions/{big}/restore", headers=headers)
                restored.raise_for_status()
                restore_seconds = time.perf_counter() - started
                print(
                    f"session of {args.session_messages} messages: archive {archive_seconds:.2f} s,"
                    f" restore {restore_seconds:.2f} s"
                )
                reads = []
                for _ in range(args.reads):
                    await archive_once(settings, store, big)
                    started = time.perf_counter()
                    page = await client.get(
                        f"{API}/sessions/{big}/messages?order=desc&limit=50", headers=headers
                    )
                    page.raise_for_status()
                    reads.append((time.perf_counter() - started) * 1000)
                reads.sort()
                p95 = reads[min(len(reads) - 1, int(len(reads) * 0.95))]
                print(
                    f"read of an archived session (restore included), {args.reads} reads: "
                    f"p50 {statistics.median(reads):.0f} ms, p95 {p95:.0f} ms"
                )
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--session-messages", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
