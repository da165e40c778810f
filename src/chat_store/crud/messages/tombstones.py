"""Tombstones: deleted messages, kept for the change feed's replay."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.models import MessageTombstone


async def add_tombstone(
    db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID, seq: int, version: int
) -> None:
    await db.execute(
        insert(MessageTombstone).values(
            message_id=message_id, session_id=session_id, seq=seq, version=version
        )
    )


async def deleted_since(
    db: AsyncSession, session_id: uuid.UUID, version: int
) -> list[MessageTombstone]:
    result = await db.execute(
        select(MessageTombstone)
        .where(MessageTombstone.session_id == session_id, MessageTombstone.version > version)
        .order_by(MessageTombstone.version)
    )
    return list(result.scalars())
