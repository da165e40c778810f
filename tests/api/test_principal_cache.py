"""Verified credentials kept in each process, and revoked in every process at once (a revoked
key, a deleted user); the cache can be turned off.

Two app instances stand for two workers: they share the database and a Redis the test starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from redis.asyncio import Redis

from chat_store.api.deps import AppState
from chat_store.cache import MemoryCache, RedisCache
from chat_store.cache.bus import MemoryBus, RedisBus
from chat_store.cache.near import NearCache
from chat_store.security import sha256_hex
from chat_store.services import principals
from tests.conftest import AppWith
from tests.factories import API, ME, Account, Factory
from tests.support.redis_server import RedisServer

T = TypeVar("T")


@asynccontextmanager
async def _workers(
    app_with: AppWith, redis_server: RedisServer, **settings: Any
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Clients of two app instances (two workers) on the test's Redis."""
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                app_with(redis_url=redis_server.url, redis_prefix="pc:", **settings)
            )
            for _ in range(2)
        ]
        yield [worker.client for worker in workers]


@pytest.fixture
async def two_workers(
    app_with: AppWith, redis_server: RedisServer
) -> AsyncIterator[list[httpx.AsyncClient]]:
    # A local lifetime far longer than the test: only the announcement can end a copy.
    async with _workers(app_with, redis_server, principal_local_cache_seconds=300) as clients:
        yield clients


async def _eventually(probe: Callable[[], Awaitable[T]], wanted: T, within: float = 8.0) -> T:
    """What `probe` answers once it answers `wanted`, or its last answer after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (value := await probe()) != wanted and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return value


def _status(client: httpx.AsyncClient, headers: dict[str, str]) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return (await client.get(f"{API}/sessions", headers=headers)).status_code

    return probe


async def test_revoked_key_is_refused_by_the_other_worker(
    two_workers: list[httpx.AsyncClient], redis_server: RedisServer
) -> None:
    first, second = two_workers
    account = await Factory(first).account()
    key = await Factory(first).api_key(account)
    headers = {"X-API-Key": key["key"]}
    for _ in range(2):  # verified from the database, then kept by the second worker
        assert (await second.get(f"{API}/sessions", headers=headers)).status_code == 200

    revoked = await first.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
    assert revoked.status_code == 204

    assert await _eventually(_status(first, headers), 401, within=5.0) == 401
    assert await _eventually(_status(second, headers), 401, within=5.0) == 401


async def test_deleted_user_is_refused_by_the_other_worker(
    two_workers: list[httpx.AsyncClient],
) -> None:
    first, second = two_workers
    account = await Factory(first).account()
    for _ in range(2):  # verified from the database, then kept by the second worker
        assert (await second.get(f"{API}/sessions", headers=account.headers)).status_code == 200

    deleted = await first.delete(f"{API}/users/me", headers=account.headers)
    assert deleted.status_code == 204

    assert await _eventually(_status(second, account.headers), 401, within=5.0) == 401


# --- revocations whatever Redis does
#
# A revocation marker written while Redis is away is lost, and Redis may hold (or be given back)
# an entry verified before the revocation. Neither may make a revoked credential last longer than
# PRINCIPAL_LOCAL_CACHE_SECONDS after the revocation's answer, in any process.

LOCAL_SECONDS = 1.0


@pytest.fixture
async def short_lived_workers(
    app_with: AppWith, redis_server: RedisServer
) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with _workers(
        app_with,
        redis_server,
        principal_cache_seconds=60,
        principal_local_cache_seconds=LOCAL_SECONDS,
    ) as clients:
        yield clients


def _admin(server: RedisServer) -> Redis:
    return Redis.from_url(server.url)


@asynccontextmanager
async def _client_pause(server: RedisServer) -> AsyncIterator[None]:
    admin = _admin(server)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "800", "ALL")
    finally:
        await admin.aclose()
    yield  # the pause ends by itself


@asynccontextmanager
async def _sigstop(server: RedisServer) -> AsyncIterator[None]:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@asynccontextmanager
async def _restart_from_a_snapshot(server: RedisServer) -> AsyncIterator[None]:
    # Redis comes back with what it held before the revocation (as from an RDB or AOF file).
    admin = _admin(server)
    try:
        await admin.save()
    finally:
        await admin.aclose()
    server.stop()
    try:
        yield
    finally:
        server.start()


@asynccontextmanager
async def _flushall_and_a_late_write(server: RedisServer) -> AsyncIterator[None]:
    # After the revocation Redis is emptied (the marker goes with it), and an entry verified
    # before the revocation is written back, as a request that read the database just before
    # the revocation would.
    admin = _admin(server)
    try:
        entries = {key: await admin.get(key) for key in await admin.keys("pc:principal:*")}
        yield
        await admin.flushall()
        for key, value in entries.items():
            await admin.set(key, value, ex=60)
    finally:
        await admin.aclose()


DISRUPTIONS: dict[str, Callable[[RedisServer], AbstractAsyncContextManager[None]]] = {
    "client-pause": _client_pause,
    "sigstop": _sigstop,
    "restart": _restart_from_a_snapshot,
    "flushall": _flushall_and_a_late_write,
}


async def _refused_within_the_local_window(
    workers: list[httpx.AsyncClient], headers: list[dict[str, str]], answered_at: float
) -> None:
    """Every request that arrives LOCAL_SECONDS after the revocation's answer (`answered_at`),
    on any worker, with any of the credentials, is refused; watched for two seconds more."""
    loop = asyncio.get_running_loop()
    late: list[tuple[int, int, float]] = []
    while (started := loop.time()) < answered_at + LOCAL_SECONDS + 2.0:
        for number, worker in enumerate(workers):
            for credential in headers:
                status = (await worker.get(f"{API}/sessions", headers=credential)).status_code
                if started > answered_at + LOCAL_SECONDS and status != 401:
                    late.append((number, status, round(started - answered_at, 2)))
        await asyncio.sleep(0.05)
    assert late == [], f"(worker, status, seconds after the answer): {late}"


@pytest.mark.parametrize("disruption", DISRUPTIONS)
async def test_a_revoked_key_is_refused_everywhere_whatever_redis_did(
    short_lived_workers: list[httpx.AsyncClient], redis_server: RedisServer, disruption: str
) -> None:
    first, second = short_lived_workers
    account = await Factory(first).account()
    key = await Factory(first).api_key(account)
    headers = {"X-API-Key": key["key"]}
    for worker in (first, second, second):  # verified, and kept by both workers
        assert (await worker.get(f"{API}/sessions", headers=headers)).status_code == 200

    async with DISRUPTIONS[disruption](redis_server):
        revoked = await first.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
        assert revoked.status_code == 204
        answered_at = asyncio.get_running_loop().time()

    await _refused_within_the_local_window([first, second], [headers], answered_at)


@pytest.mark.parametrize("disruption", ["client-pause", "flushall"])
async def test_a_deleted_user_is_refused_everywhere_whatever_redis_did(
    short_lived_workers: list[httpx.AsyncClient], redis_server: RedisServer, disruption: str
) -> None:
    first, second = short_lived_workers
    account = await Factory(first).account()
    key = {"X-API-Key": (await Factory(first).api_key(account))["key"]}
    for worker in (first, second, second):
        for headers in (account.headers, key):
            assert (await worker.get(f"{API}/sessions", headers=headers)).status_code == 200

    async with DISRUPTIONS[disruption](redis_server):
        deleted = await first.delete(f"{API}/users/me", headers=account.headers)
        assert deleted.status_code == 204
        answered_at = asyncio.get_running_loop().time()

    await _refused_within_the_local_window([first, second], [account.headers, key], answered_at)
    for worker in (first, second):
        created = await worker.post(f"{API}/sessions", json={}, headers=account.headers)
        assert created.status_code == 401


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        return await super().get(key)


async def test_near_cache_reads_the_shared_cache_once_per_lifetime() -> None:
    remote = CountingCache()
    near = NearCache(remote, MemoryBus(), local_seconds=0.2)
    await near.start()
    await remote.set("k", b"v", 60)

    assert [await near.get("k") for _ in range(5)] == [b"v"] * 5
    assert remote.reads == 1

    await asyncio.sleep(0.25)
    assert await near.get("k") == b"v"
    assert remote.reads == 2  # the local copy ran out
    await near.close()


async def test_near_cache_add_never_hides_a_marker_and_set_is_announced() -> None:
    remote, bus = MemoryCache(), MemoryBus()
    near, other = NearCache(remote, bus, 60), NearCache(remote, bus, 60)
    await near.start()
    await other.start()
    try:
        await near.add("k", b"fresh", 60)
        assert await other.get("k") == b"fresh"  # `other` keeps it locally now
        await remote.set("k", b"marker", 60)  # e.g. written while `near` read the database
        await near.add("k", b"late", 60)  # SET NX: the marker stays
        assert await near.get("k") == b"marker"

        await near.set("k", b"revoked", 60)
        await asyncio.sleep(0.01)  # the announcement reaches the follower
        assert await other.get("k") == b"revoked"
    finally:
        await near.close()
        await other.close()


class SlowCache(MemoryCache):
    """Answers a read with the value it had when the read began, after a pause."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.answer = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        self.reading.set()
        await self.answer.wait()
        return value


async def test_near_cache_does_not_keep_an_answer_older_than_an_eviction() -> None:
    remote = SlowCache()
    near = NearCache(remote, MemoryBus(), local_seconds=60)
    await near.start()
    await remote.set("k", b"valid", 60)

    read = asyncio.create_task(near.get("k"))
    await remote.reading.wait()  # Redis has read the old value...
    await remote.set("k", b"revoked", 60)  # ...another process revokes and announces it
    near.evict(["k"])
    remote.answer.set()
    assert await read == b"valid"  # the read that began first may still see the old value

    assert await near.get("k") == b"revoked"  # but did not keep it
    await near.close()


@asynccontextmanager
async def near_over_redis(url: str) -> AsyncIterator[NearCache]:
    cache, bus = RedisCache(url, "nc:"), RedisBus(url, "nc:")
    near = NearCache(cache, bus, local_seconds=300)
    try:
        await near.start()
        yield near
    finally:
        await near.close()
        await bus.close()
        await cache.close()


async def _keeps_a_copy(near: NearCache, url: str) -> None:
    """`near` reads k=valid from Redis and keeps it: a silent change in Redis is not seen."""
    admin = Redis.from_url(url)
    try:
        await admin.set("nc:k", b"valid")
        assert await near.get("k") == b"valid"
        await admin.set("nc:k", b"changed without an announcement")
        assert await near.get("k") == b"valid"
    finally:
        await admin.aclose()


async def test_process_started_while_redis_was_down_still_hears_revocations(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)  # not started yet
    async with near_over_redis(server.url) as first:
        server.start()
        try:
            async with near_over_redis(server.url) as second:
                await asyncio.sleep(1.5)  # past the cache's back-off after the failed calls
                # The bus re-subscribed when Redis came back and flagged the gap: copies are kept
                # again once `first` has forgotten what it may have missed.
                await first.get("k")
                await _keeps_a_copy(first, server.url)
                await second.set("k", b"revoked", 60)
                assert await _eventually(lambda: first.get("k"), b"revoked") == b"revoked"
        finally:
            server.stop()


async def test_copies_are_dropped_when_the_bus_reconnects(redis_server: RedisServer) -> None:
    async with near_over_redis(redis_server.url) as first:
        await _keeps_a_copy(first, redis_server.url)
        admin = Redis.from_url(redis_server.url)
        try:
            # Every pub/sub connection drops: an announcement sent now would reach nobody.
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await admin.set("nc:k", b"revoked")
        finally:
            await admin.aclose()
        # The bus reconnects within about a second and flags the gap; `first` then forgets.
        assert await _eventually(lambda: first.get("k"), b"revoked") == b"revoked"


async def _key_in_use(
    client: httpx.AsyncClient, factory: Factory
) -> tuple[Account, dict[str, Any], dict[str, str]]:
    """An account, an API key of it, and the key's headers, used once (so it is cached)."""
    account = await factory.account()
    key = await factory.api_key(account)
    headers = {"X-API-Key": key["key"]}
    assert (await client.get(ME, headers=headers)).status_code == 200
    return account, key, headers


async def test_revoked_key_is_refused_at_once_despite_the_principal_cache(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account, key, headers = await _key_in_use(client, factory)
    hits_before = getattr(state.cache, "hits", 0)
    assert (await client.get(ME, headers=headers)).status_code == 200
    assert getattr(state.cache, "hits", 0) > hits_before  # served from the cache
    revoked = await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
    assert revoked.status_code == 204
    answer = await client.get(ME, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


async def test_deleted_user_token_and_key_are_refused_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    key = await factory.api_key(account)
    for headers in (account.headers, {"X-API-Key": key["key"]}):
        assert (await client.get(ME, headers=headers)).status_code == 200
    assert (await client.delete(ME, headers=account.headers)).status_code == 204
    for headers in (account.headers, {"X-API-Key": key["key"]}):
        assert (await client.get(ME, headers=headers)).status_code == 401


async def test_a_late_cache_fill_cannot_undo_a_revocation(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account, key, headers = await _key_in_use(client, factory)
    cache_key = principals.api_key_cache_key(sha256_hex(key["key"]))
    entry = await state.cache.get(cache_key)
    assert entry is not None and entry != principals.REVOKED
    assert (
        await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
    ).status_code == 204
    # A request that read the key before the revocation committed now tries to cache it.
    await state.cache.add(cache_key, entry, 60)
    assert await state.cache.get(cache_key) == principals.REVOKED
    assert (await client.get(ME, headers=headers)).status_code == 401


async def test_principal_cache_can_be_turned_off(app_with: AppWith) -> None:
    async with app_with(principal_cache_seconds=0) as uncached:
        client = uncached.client
        account = await uncached.factory.account()
        key = await uncached.factory.api_key(account)
        for _ in range(2):
            assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200
        assert getattr(uncached.state.cache, "hits", 0) == 0
        await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
        assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 401
