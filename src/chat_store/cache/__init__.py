"""Cache adapters with one interface: Redis when REDIS_URL is set, in-process otherwise.

Redis is never the only copy of anything: every caller treats a failure as a miss, so the
service keeps answering from the database while Redis is away.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from redis.exceptions import RedisError

from chat_store.cache.connection import redis_client

logger = logging.getLogger(__name__)


class Cache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Set only if the key is absent (never overwrites, e.g., a revocation marker)."""
        ...

    async def delete(self, *keys: str) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process cache for the embedded default (one process)."""

    backend = "memory"

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: dict[str, tuple[float, bytes]] = {}
        self._max_items = max_items
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            self._items.pop(key, None)
            self.misses += 1
            return None
        self.hits += 1
        return item[1]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if len(self._items) >= self._max_items:
            self._items.pop(next(iter(self._items)))  # oldest insertion goes first
        self._items[key] = (time.monotonic() + ttl_seconds, value)

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            await self.set(key, value, ttl_seconds)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._items.pop(key, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    """Redis adapter that fails open: errors are logged and counted, and read as misses.

    After a failure Redis is left alone for RETRY_AFTER_SECONDS (requests don't each wait for
    a timeout while it is away); the first call after that tries again, so the cache comes
    back by itself when Redis does.
    """

    backend = "redis"
    RETRY_AFTER_SECONDS = 1.0

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis_client(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=10
        )
        self._prefix = prefix
        self.errors = 0
        self.hits = 0
        self.misses = 0
        self._skip_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, operation: str, exc: RedisError) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + self.RETRY_AFTER_SECONDS
        logger.warning("redis %s failed: %s", operation, type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            self.misses += 1
            return None
        try:
            value = await self._redis.get(self._prefix + key)
        except RedisError as exc:
            self._failed("get", exc)
            self.misses += 1
            return None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if not self.available:
            return
        try:
            await self._redis.set(self._prefix + key, value, px=_milliseconds(ttl_seconds))
        except RedisError as exc:
            self._failed("set", exc)

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if not self.available:
            return
        try:
            await self._redis.set(self._prefix + key, value, px=_milliseconds(ttl_seconds), nx=True)
        except RedisError as exc:
            self._failed("set", exc)

    async def delete(self, *keys: str) -> None:
        if not keys or not self.available:
            return
        try:
            await self._redis.delete(*(self._prefix + key for key in keys))
        except RedisError as exc:
            self._failed("delete", exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError as exc:
            self._failed("ping", exc)
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def create_cache(redis_url: str | None, prefix: str) -> Cache:
    if redis_url:
        return RedisCache(redis_url, prefix)
    return MemoryCache()
