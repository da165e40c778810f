"""The app's state: what the lifespan builds once, and the counters the process keeps.

It sits below every layer: the routers reach it through api/deps.py, the services through the
request's context, /metrics reads it when scraped.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat_store.cache import Cache
from chat_store.cache.bus import Bus
from chat_store.ratelimit import RateLimiter
from chat_store.settings import Settings
from chat_store.storage import ArchiveStore


@dataclass
class StreamStats:
    """Open streams of this process (exported in /metrics, checked by tests)."""

    open_streams: int = 0
    opened_total: int = 0

    def opened(self) -> None:
        self.open_streams += 1
        self.opened_total += 1

    def closed(self) -> None:
        self.open_streams -= 1


@dataclass
class ServiceCounters:
    """Domain counters, bumped by the services once a write has committed."""

    messages_appended: int = 0
    deltas_appended: int = 0

    def count_messages(self, count: int) -> Callable[[], Awaitable[None]]:
        async def bump() -> None:
            self.messages_appended += count

        return bump

    async def count_delta(self) -> None:
        self.deltas_appended += 1


class RestoreArchived(Protocol):
    """Puts an archived session's messages back in `db`'s transaction from `app`'s archive
    (nothing when the session is not archived); services/archive.py provides it, the lifespan
    wires it here."""

    async def __call__(
        self, app: AppState, db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
    ) -> None: ...


@dataclass
class AppState:
    """Everything the lifespan builds once; reached only through the aliases in api/deps.py."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    # Reads in a transaction of their own (live streams): db.create_snapshot_sessionmaker.
    snapshot_sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    # Verified credentials (and their revocation markers): `cache`, or a near copy of it.
    principal_cache: Cache
    bus: Bus
    limiter: RateLimiter
    # Where archived sessions' messages are (storage/).
    archive: ArchiveStore
    streams: StreamStats = field(default_factory=StreamStats)
    counters: ServiceCounters = field(default_factory=ServiceCounters)
    # None where nothing archives (scripts, tests that build a state of their own).
    restore_archived: RestoreArchived | None = None

    @property
    def stale_after(self) -> timedelta:
        """An open message with no change for this long is reported `stale` (its writer went
        silent): STALE_STREAM_SECONDS."""
        return timedelta(seconds=self.settings.stale_stream_seconds)
