"""The Redis clients of the cache, the bus and the rate limiter.

A pooled connection outlives a Redis restart: its next command fails with "Connection closed
by server" while a new connection would succeed. One retry on a fresh connection, for that
error alone, hides the restart. A timeout is never retried: a stalled Redis must cost one
timeout, not two.

The same error comes when a connection dies after Redis ran the command but before its reply
arrived (a proxy or a failover cutting connections): the command then runs twice. For the cache
that is the same write again; for the bus an event that arrives twice (readers drop what they
have: versions and offsets); for the rate limiter one request counted twice in its window. That
rare extra count is the price of not refusing (or, failing open, not counting) every limited
request for a second after each restart.
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
