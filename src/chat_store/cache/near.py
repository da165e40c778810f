"""A short-lived in-process copy in front of the shared cache, for small, hot entries.

Every authenticated request looks up its verified credential; from Redis that is a network
round trip per request, which costs more CPU than the rest of a cached read. This layer keeps
what Redis answered for a few seconds in the process. Writes (a revocation marker) go to Redis
first and are announced on the bus, so every process drops its copy at once; a lost announcement
(Redis pub/sub away) is bounded by the local lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from chat_store.cache import Cache
from chat_store.cache.bus import INTERNAL_CHANNEL_PREFIX, Bus, Subscription

EVICT_CHANNEL = f"{INTERNAL_CHANNEL_PREFIX}cache-evict"


class NearCache:
    """Implements Cache over `remote`, keeping values locally for at most `local_seconds`."""

    def __init__(
        self, remote: Cache, bus: Bus, local_seconds: float, max_items: int = 10_000
    ) -> None:
        self.backend = remote.backend
        self._remote = remote
        self._bus = bus
        self._local_seconds = local_seconds
        self._max_items = max_items
        self._items: dict[str, tuple[float, bytes]] = {}
        self._evictions = 0  # evict() calls so far
        self.hits = 0  # reads answered by the local copy (the remote counts its own)
        self._follower: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._resources = contextlib.AsyncExitStack()

    def _keep(self, key: str, value: bytes) -> None:
        if key not in self._items and len(self._items) >= self._max_items:
            self._items.pop(next(iter(self._items)))  # oldest insertion goes first
        self._items[key] = (time.monotonic() + self._local_seconds, value)

    async def get(self, key: str) -> bytes | None:
        if self._subscription is None or self._subscription.lost:
            # Announcements may have been missed (not following yet, or the bus reconnected):
            # forget every copy rather than trust one.
            self._forget_all()
        item = self._items.get(key)
        if item is not None:
            if item[0] >= time.monotonic():
                self.hits += 1
                return item[1]
            del self._items[key]
        evictions = self._evictions
        value = await self._remote.get(key)
        # An eviction that arrived while Redis answered may be newer than that answer: then the
        # answer is used once but not kept.
        if value is not None and evictions == self._evictions:
            self._keep(key, value)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._remote.set(key, value, ttl_seconds)
        self._keep(key, value)
        await self._bus.publish(EVICT_CHANNEL, {"keys": [key]})

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> None:
        # Only the shared copy: it may already hold a marker this process has not seen, and the
        # next get() reads whichever value won. The local copy goes: the caller found it no
        # longer good (it adds after a miss), and keeping it would send every request until its
        # local lifetime ends past it again.
        await self._remote.add(key, value, ttl_seconds)
        self._items.pop(key, None)

    async def delete(self, *keys: str) -> None:
        await self._remote.delete(*keys)
        self.evict(keys)
        await self._bus.publish(EVICT_CHANNEL, {"keys": list(keys)})

    def evict(self, keys: list[str] | tuple[str, ...]) -> None:
        self._evictions += 1
        for key in keys:
            self._items.pop(key, None)

    def _forget_all(self) -> None:
        self._evictions += 1
        self._items.clear()
        if self._subscription is not None:
            self._subscription.lost = False

    async def ping(self) -> bool:
        return await self._remote.ping()

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        await self._resources.aclose()
        self._items.clear()

    async def start(self) -> None:
        """Follow evictions announced by any process, this one included (until close())."""
        self._subscription = await self._resources.enter_async_context(
            self._bus.subscribe(EVICT_CHANNEL)
        )
        self._follower = asyncio.create_task(
            self._follow(self._subscription), name="near-cache-evictions"
        )

    async def _follow(self, subscription: Subscription) -> None:
        while True:
            event = await subscription.next(wait_seconds=60.0)
            if subscription.lost:
                self._forget_all()
            keys = event.get("keys") if isinstance(event, dict) else None
            if isinstance(keys, list):
                self.evict([key for key in keys if isinstance(key, str)])
