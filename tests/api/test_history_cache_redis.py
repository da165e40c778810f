"""Hot history on a real Redis that goes away and comes back while the service keeps answering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chat_store.cache import RedisCache
from tests.conftest import AppWith
from tests.factories import API, Account, Factory
from tests.support.redis_server import RedisServer


@pytest.fixture
async def redis_app_client(
    app_with: AppWith, redis_server: RedisServer
) -> AsyncIterator[tuple[httpx.AsyncClient, RedisCache]]:
    async with app_with(redis_url=redis_server.url, redis_prefix="rt:") as on_own_redis:
        cache = on_own_redis.state.cache
        assert isinstance(cache, RedisCache)
        yield on_own_redis.client, cache


async def _history_keys(server: RedisServer) -> list[bytes]:
    redis = Redis.from_url(server.url)
    try:
        return [key async for key in redis.scan_iter(match="rt:hist:*")]
    finally:
        await redis.aclose()


async def _texts(client: httpx.AsyncClient, session_id: str, headers: dict[str, str]) -> list[str]:
    response = await client.get(f"{API}/sessions/{session_id}/messages", headers=headers)
    assert response.status_code == 200, response.text
    return [m["content"] or m["partial_content"] for m in response.json()["data"]]


async def _session_saying(
    client: httpx.AsyncClient, text: str
) -> tuple[Account, dict[str, Any], str]:
    """A new account's session with one user message; its messages' URL."""
    factory = Factory(client)
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    await client.post(url, json={"role": "user", "content": text}, headers=account.headers)
    return account, session, url


async def test_history_is_cached_in_redis_and_never_stale(
    redis_app_client: tuple[httpx.AsyncClient, RedisCache], redis_server: RedisServer
) -> None:
    client, _ = redis_app_client
    account, session, url = await _session_saying(client, "one")

    assert await _texts(client, session["id"], account.headers) == ["one"]
    assert len(await _history_keys(redis_server)) == 1  # the read filled the cache

    await client.post(url, json={"role": "user", "content": "two"}, headers=account.headers)
    assert await _texts(client, session["id"], account.headers) == ["one", "two"]


async def test_redis_down_then_back(
    redis_app_client: tuple[httpx.AsyncClient, RedisCache], redis_server: RedisServer
) -> None:
    client, cache = redis_app_client
    account, session, url = await _session_saying(client, "before")
    assert await _texts(client, session["id"], account.headers) == ["before"]

    redis_server.stop()
    errors_before = cache.errors
    # Writes and reads go on against the database while Redis is away.
    created = await client.post(
        url, json={"role": "assistant", "content": "during"}, headers=account.headers
    )
    assert created.status_code == 201
    assert await _texts(client, session["id"], account.headers) == ["before", "during"]
    assert cache.errors > errors_before  # the failure is counted

    redis_server.start()  # same port, empty
    await asyncio.sleep(RedisCache.RETRY_AFTER_SECONDS)  # the back-off after a failure
    await client.post(url, json={"role": "user", "content": "after"}, headers=account.headers)
    assert await _texts(client, session["id"], account.headers) == ["before", "during", "after"]
    # The cache is in use again without a restart.
    assert len(await _history_keys(redis_server)) == 1
    assert await _texts(client, session["id"], account.headers) == ["before", "during", "after"]


async def test_a_quick_redis_restart_costs_no_cache_error(
    redis_app_client: tuple[httpx.AsyncClient, RedisCache], redis_server: RedisServer
) -> None:
    """The pooled connection outlives a restart; its first command is tried once more on a new
    connection instead of counting as a failure (which would leave Redis unused for a second)."""
    client, cache = redis_app_client
    account, session, _ = await _session_saying(client, "before")
    assert await _texts(client, session["id"], account.headers) == ["before"]
    errors_before = cache.errors

    redis_server.stop()
    redis_server.start()  # same port, empty
    assert await _texts(client, session["id"], account.headers) == ["before"]
    assert cache.errors == errors_before
    assert len(await _history_keys(redis_server)) == 1  # the read filled the new Redis


async def test_stale_entry_left_in_redis_is_never_served(
    redis_app_client: tuple[httpx.AsyncClient, RedisCache], redis_server: RedisServer
) -> None:
    """A write made while Redis was away cannot invalidate it; the version check still must."""
    client, _ = redis_app_client
    account, session, url = await _session_saying(client, "a")
    assert await _texts(client, session["id"], account.headers) == ["a"]
    cached = await _history_keys(redis_server)
    redis = Redis.from_url(redis_server.url)
    stale = await redis.get(cached[0])

    await client.post(url, json={"role": "user", "content": "b"}, headers=account.headers)
    await redis.set(cached[0], stale)  # as if the newer copy was never written
    await redis.aclose()
    assert await _texts(client, session["id"], account.headers) == ["a", "b"]
