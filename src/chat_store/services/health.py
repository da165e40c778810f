from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from chat_store import migrate
from chat_store.cache import Cache
from chat_store.db import without_write_lock

logger = logging.getLogger(__name__)

_CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ReadinessReport:
    database: Literal["ok", "unavailable", "migrations_pending"]
    cache: Literal["ok", "degraded"]


async def readiness(engine: AsyncEngine, cache: Cache) -> ReadinessReport:
    return ReadinessReport(database=await _database_state(engine), cache=await _cache_state(cache))


async def _database_state(
    engine: AsyncEngine,
) -> Literal["ok", "unavailable", "migrations_pending"]:
    try:
        reading = without_write_lock(engine)
        async with asyncio.timeout(_CHECK_TIMEOUT_SECONDS), reading.connect() as connection:
            current = await connection.run_sync(migrate.current_revisions)
    except Exception as exc:  # any failure to reach the database means "not ready"
        logger.warning("readiness: database unavailable: %s", type(exc).__name__)
        return "unavailable"
    return "ok" if current == migrate.head_revisions() else "migrations_pending"


async def _cache_state(cache: Cache) -> Literal["ok", "degraded"]:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_SECONDS):
            return "ok" if await cache.ping() else "degraded"
    except TimeoutError:
        return "degraded"
