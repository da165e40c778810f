"""Rate limits on `limits.aio` (the library under slowapi), with an async storage.

slowapi itself calls its storage synchronously (a Redis round trip would block the event loop)
and its key function cannot await a principal, so the limiter is built here on the same
library and the same limit syntax ("20/minute"), with slowapi's header names.
Storage is Redis when REDIS_URL is set (shared by all workers), in memory otherwise.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from chat_store.cache.connection import reconnect_once

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the window has room again

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


class RateLimiter:
    """Sliding-window counters; fails open (configurable) when the storage is unreachable."""

    RETRY_AFTER_SECONDS = 1.0

    def __init__(self, redis_url: str | None, prefix: str, *, fail_open: bool = True) -> None:
        self.storage: Storage
        if redis_url:
            uri = redis_url.replace("redis://", "async+redis://", 1).replace(
                "rediss://", "async+rediss://", 1
            )
            self.storage = RedisStorage(
                uri,
                implementation="redispy",
                key_prefix=f"{prefix}rl",
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                retry=reconnect_once(),  # type: ignore[arg-type]  # passed on to redis-py
            )
        else:
            self.storage = MemoryStorage()
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.fail_open = fail_open
        self.errors = 0
        self.rejections = 0
        self._skip_until = 0.0

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> LimitResult:
        """Count a request (or `cost` of them) and say whether it is within the limit."""
        return await self._check(item, identifiers, consume=True, cost=cost)

    async def give_back(self, item: RateLimitItem, *identifiers: str) -> None:
        """Un-count one hit (e.g. an attempt that turned out not to count). limits has no
        decrement of its own: a hit of cost -1 is one, in the current window of both storages.
        Best effort: if the window has moved on since the hit, or the storage is away, the limit
        is looser by one for a while, never stricter."""
        if time.monotonic() < self._skip_until:
            return
        try:
            await self.strategy.hit(item, *identifiers, cost=-1)
        except Exception as exc:  # as in _check: any storage error means "unavailable"
            self.errors += 1
            self._skip_until = time.monotonic() + self.RETRY_AFTER_SECONDS
            logger.warning("rate-limit storage failed: %s", type(exc).__name__)

    async def test(self, item: RateLimitItem, *identifiers: str) -> LimitResult:
        """Whether one more hit would pass, without counting one."""
        return await self._check(item, identifiers, consume=False)

    async def _check(
        self, item: RateLimitItem, identifiers: tuple[str, ...], *, consume: bool, cost: int = 1
    ) -> LimitResult:
        if time.monotonic() < self._skip_until:
            return self._unavailable(item)
        try:
            if consume:
                allowed = await self.strategy.hit(item, *identifiers, cost=cost)
            else:
                allowed = await self.strategy.test(item, *identifiers)
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except Exception as exc:  # storage errors come in many types; all mean "unavailable"
            self.errors += 1
            self._skip_until = time.monotonic() + self.RETRY_AFTER_SECONDS
            logger.warning("rate-limit storage failed: %s", type(exc).__name__)
            return self._unavailable(item)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        if not allowed:
            self.rejections += 1
        return LimitResult(allowed, item.amount, max(0, stats.remaining), reset)

    def _unavailable(self, item: RateLimitItem) -> LimitResult:
        allowed = self.fail_open
        if not allowed:
            self.rejections += 1
        return LimitResult(allowed, item.amount, item.amount if allowed else 0, 1)

    async def close(self) -> None:
        reset = getattr(self.storage, "reset", None)
        if isinstance(self.storage, MemoryStorage) and reset is not None:
            await reset()


@lru_cache(maxsize=32)
def parse_limit(value: str) -> RateLimitItem:
    return parse(value)
