"""Redis crashes under load, on a Redis server of the test's own (killed with SIGKILL, started
again on the same port): Redis is a cache and a bus, never the only copy (docs/operations.md).

- Killed twice while messages and deltas are being appended: every append is answered (the
  service fails open to the database), every acknowledged one is stored, reads made while Redis
  is away see every write acknowledged before them, and after the restart the API reads what the
  database holds.
- Restarted from an older snapshot (an RDB saved before later writes, as after a crash of a
  Redis with persistence): the stale history windows it brings back are never served.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from chat_store.cache import RedisCache
from chat_store.models import Message, MessageChunk
from chat_store.services.history_cache import HistoryWindow
from tests.conftest import AppWith
from tests.factories import API, Account, Factory
from tests.support.redis_server import RedisServer

PREFIX = "rf:"


@pytest.fixture
async def redis_app(
    app_with: AppWith, redis_server: RedisServer
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app on the test database with the test's own Redis."""
    async with app_with(redis_url=redis_server.url, redis_prefix=PREFIX) as started:
        assert isinstance(started.state.cache, RedisCache)
        yield started.app, started.client


async def _keys(server: RedisServer, pattern: str) -> list[bytes]:
    redis = Redis.from_url(server.url)
    try:
        return [key async for key in redis.scan_iter(match=pattern)]
    finally:
        await redis.aclose()


async def _stored(app: FastAPI, session_id: str) -> list[tuple[int, str | None, str]]:
    """The session's messages as the database holds them: seq, content, streamed text."""
    state = app.state.resources
    async with state.sessionmaker() as db:
        messages = (
            await db.execute(
                select(Message)
                .where(Message.session_id == uuid.UUID(session_id))
                .order_by(Message.seq)
            )
        ).scalars()
        rows = []
        for message in messages:
            chunks = (
                await db.execute(
                    select(MessageChunk.text)
                    .where(MessageChunk.message_id == message.id)
                    .order_by(MessageChunk.start)
                )
            ).scalars()
            rows.append(
                (message.seq, message.content, (message.partial_content or "") + "".join(chunks))
            )
        return rows


async def _all_messages(
    client: httpx.AsyncClient, account: Account, session_id: str
) -> list[dict[str, Any]]:
    """Every message through the API, page by page (the newest page from the history cache)."""
    url = f"{API}/sessions/{session_id}/messages"
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = await client.get(url, params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        if not page["has_more"]:
            return items
        params["after"] = page["last_id"]


@dataclass
class Load:
    """Appends made while Redis dies and comes back, and what each answer said."""

    client: httpx.AsyncClient
    account: Account
    session_id: str
    answer_id: str
    acknowledged: list[tuple[int, str]] = field(default_factory=list)  # (seq, content)
    streamed: str = ""
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def append_messages(self) -> None:
        url = f"{API}/sessions/{self.session_id}/messages"
        index = 0
        while not self.stop.is_set():
            content = f"m{index} 🙂"
            response = await self.client.post(
                url, json={"role": "user", "content": content}, headers=self.account.headers
            )
            if response.status_code != 201:
                self.failures.append(f"append {index}: {response.status_code} {response.text}")
            else:
                self.acknowledged.append((response.json()["seq"], content))
            index += 1

    async def append_deltas(self) -> None:
        url = f"{API}/sessions/{self.session_id}/messages/{self.answer_id}/append"
        index = 0
        while not self.stop.is_set():
            delta = f"d{index}·𝄞 "
            response = await self.client.post(
                url,
                json={"delta": delta, "offset": len(self.streamed)},
                headers={**self.account.headers, "Prefer": "return=minimal"},
            )
            if response.status_code != 200:
                self.failures.append(f"delta {index}: {response.status_code} {response.text}")
                return  # the offsets of later deltas would be wrong
            self.streamed += delta
            index += 1

    async def read_newest(self) -> None:
        """The newest page, over and over: it holds every append acknowledged before the read
        began (read-your-writes, with Redis up, down or freshly empty)."""
        url = f"{API}/sessions/{self.session_id}/messages"
        while not self.stop.is_set():
            known = {seq for seq, _ in self.acknowledged}
            newest_known = max(known, default=0)
            response = await self.client.get(
                url, params={"order": "desc", "limit": 10}, headers=self.account.headers
            )
            if response.status_code != 200:
                self.failures.append(f"read: {response.status_code} {response.text}")
                continue
            seqs = [item["seq"] for item in response.json()["data"]]
            if seqs and seqs[0] < newest_known:
                self.failures.append(f"read: newest seq {seqs[0]} after {newest_known} was acked")
            if seqs != sorted(seqs, reverse=True) or len(set(seqs)) != len(seqs):
                self.failures.append(f"read: seqs out of order {seqs}")
            await asyncio.sleep(0)


async def _until(condition: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_every_acknowledged_append_survives_redis_crashes(
    redis_app: tuple[FastAPI, httpx.AsyncClient], redis_server: RedisServer
) -> None:
    app, client = redis_app
    factory = Factory(client)
    account = await factory.account()
    session = await factory.chat_session(account)
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    load = Load(client, account, session["id"], answer["id"])
    cache: RedisCache = app.state.resources.cache

    tasks = [
        asyncio.create_task(load.append_messages()),
        asyncio.create_task(load.append_deltas()),
        asyncio.create_task(load.read_newest()),
    ]
    try:
        for _ in range(2):  # two crashes
            acked = len(load.acknowledged)
            await _until(lambda acked=acked: len(load.acknowledged) >= acked + 20)
            errors = cache.errors
            redis_server.kill()
            # Writes and reads go on against the database while Redis is away.
            await _until(lambda acked=acked: len(load.acknowledged) >= acked + 40)
            assert cache.errors > errors, "Redis was not even tried while it was down"
            redis_server.start()  # same port, empty
            await asyncio.sleep(RedisCache.RETRY_AFTER_SECONDS)  # the back-off after a failure
            await _until(lambda acked=acked: len(load.acknowledged) >= acked + 60)
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)

    assert not load.failures, load.failures[:5]
    stored = await _stored(app, session["id"])
    stored_messages = [(seq, content) for seq, content, _ in stored if seq != answer["seq"]]
    assert stored_messages == sorted(load.acknowledged), "an acknowledged append is missing"
    assert [seq for seq, _, _ in stored] == list(range(1, len(stored) + 1))
    assert dict((seq, text) for seq, _, text in stored)[answer["seq"]] == load.streamed

    # After the restart, the API reads what the database holds, and the cache is back in use.
    listed = await _all_messages(client, account, session["id"])
    assert [(m["seq"], m["content"] or m["partial_content"]) for m in listed] == [
        (seq, content if content is not None else text) for seq, content, text in stored
    ]
    for _ in range(50):  # a pooled connection from before the crash may fail once more
        if await _keys(redis_server, f"{PREFIX}hist:*"):
            break
        await asyncio.sleep(RedisCache.RETRY_AFTER_SECONDS / 10)
        await _all_messages(client, account, session["id"])
    else:
        raise AssertionError("the history cache is not in use again")


async def test_windows_from_an_older_snapshot_are_never_served(
    redis_app: tuple[FastAPI, httpx.AsyncClient], redis_server: RedisServer
) -> None:
    app, client = redis_app
    factory = Factory(client)
    account = await factory.account()
    session = await factory.chat_session(account)
    messages_url = f"{API}/sessions/{session['id']}/messages"
    await factory.message(account, session["id"], content="before the snapshot")
    answer = await factory.message(
        account, session["id"], role="assistant", status="pending", partial_content="Hel"
    )
    answer_url = f"{messages_url}/{answer['id']}"
    newest: dict[str, str | int] = {"order": "desc", "limit": 5}

    async def newest_seqs() -> list[int]:
        page = await client.get(messages_url, params=newest, headers=account.headers)
        assert page.status_code == 200, page.text
        return [item["seq"] for item in page.json()["data"]]

    assert await newest_seqs() == [2, 1]
    [key] = await _keys(redis_server, f"{PREFIX}hist:*")  # the read filled the cache
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.save()  # dump.rdb: the history window as it is now
    finally:
        await redis.aclose()

    # Later writes, with the cache filled again after them.
    appended = await client.post(
        f"{answer_url}/append", json={"delta": "lo 🙂", "offset": 3}, headers=account.headers
    )
    assert appended.status_code == 200, appended.text
    await factory.message(account, session["id"], content="after the snapshot")
    assert await newest_seqs() == [3, 2, 1]

    redis_server.kill()
    redis_server.start()  # loads dump.rdb: the window from before the later writes
    redis = Redis.from_url(redis_server.url)
    try:
        restored = await redis.get(key)
    finally:
        await redis.aclose()
    assert restored is not None, "the snapshot was not loaded"
    assert HistoryWindow.decode(restored).seqs == [1, 2]  # stale: two writes behind
    await asyncio.sleep(RedisCache.RETRY_AFTER_SECONDS)

    truth = await _stored(app, session["id"])
    for _ in range(2):  # the first read finds the old window, the second the one it stored
        page = await client.get(messages_url, params=newest, headers=account.headers)
        assert page.status_code == 200, page.text
        assert [(m["seq"], m["content"], m["partial_content"]) for m in page.json()["data"]] == [
            (3, "after the snapshot", None),
            (2, None, "Hello 🙂"),
            (1, "before the snapshot", None),
        ]
        assert [seq for seq, _, _ in truth] == [1, 2, 3]
        one = await client.get(answer_url, headers=account.headers)
        assert one.json()["partial_content"] == "Hello 🙂"
