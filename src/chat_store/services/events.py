"""Change events of a session, published after commit on the bus (one channel per session).

Events carry the session's history version they were made at; readers use it to drop what
they have already seen and to notice what they missed (then they re-read the database).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache.bus import Bus
from chat_store.services import hooks


def channel(session_id: uuid.UUID) -> str:
    return f"session:{session_id}"


async def publish(bus: Bus, session_id: uuid.UUID, event: dict[str, Any]) -> None:
    """Publish now: for a change already committed (a statement run in autocommit)."""
    await bus.publish(channel(session_id), event)


def publish_after_commit(
    db: AsyncSession, bus: Bus, session_id: uuid.UUID, event: dict[str, Any]
) -> None:
    async def publish_committed() -> None:
        await publish(bus, session_id, event)

    hooks.after_commit(db, publish_committed)
