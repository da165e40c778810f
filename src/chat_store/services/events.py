"""Change events of a session, published after commit on the bus (one channel per session).

Events carry the session's history version they were made at; readers use it to drop what
they have already seen and to notice what they missed (then they re-read the database).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache.bus import Bus
from chat_store.services import hooks


def channel(session_id: uuid.UUID) -> str:
    return f"session:{session_id}"


def publish_after_commit(
    db: AsyncSession, bus: Bus, session_id: uuid.UUID, event: dict[str, Any]
) -> None:
    """Publish once the request's transaction has committed (never, if it is rolled back)."""
    hooks.after_commit(db, _publisher(bus, session_id, event))


async def publish_when_committed(
    db: AsyncSession, bus: Bus, session_id: uuid.UUID, event: dict[str, Any]
) -> None:
    """Publish what a write the session ran has changed, once it is committed: after the open
    transaction commits, or at once when the write committed by itself."""
    await hooks.when_committed(db, _publisher(bus, session_id, event))


def _publisher(
    bus: Bus, session_id: uuid.UUID, event: dict[str, Any]
) -> Callable[[], Awaitable[None]]:
    async def publish() -> None:
        await bus.publish(channel(session_id), event)

    return publish
