"""The Redis clients of the cache, the bus and the rate limiter.

A pooled connection outlives a Redis restart: its next command fails with "Connection closed
by server" while a new connection would succeed. One retry on a fresh connection, for that
error alone, hides the restart; a timeout is never retried (the command may have run, and a
stalled Redis must cost one timeout, not two).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def reconnect_once() -> Retry:
    """The retry policy above, for a client made by another library (the rate limiter's)."""
    return Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))


def redis_client(url: str, **options: Any) -> Redis:
    return Redis.from_url(url, retry=reconnect_once(), **options)
