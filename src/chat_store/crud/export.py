"""Statements of export and import: an owner's sessions in keyset batches, imported sessions
found by their source fingerprint."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.models import ChatSession

_SESSION_TABLE = cast(Table, ChatSession.__table__)


async def sessions_after(
    db: AsyncSession, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[ChatSession]:
    """The owner's sessions by id (time-ordered UUIDv7: oldest first), after `after`."""
    stmt = select(ChatSession).where(ChatSession.user_id == user_id)
    if after is not None:
        stmt = stmt.where(ChatSession.id > after)
    result = await db.execute(stmt.order_by(ChatSession.id).limit(limit))
    return list(result.scalars())


async def find_imported(
    db: AsyncSession, user_id: uuid.UUID, fingerprint: str
) -> ChatSession | None:
    # Served by uq_chat_session_user_id_source_fingerprint.
    result = await db.execute(
        select(ChatSession).where(
            ChatSession.user_id == user_id, ChatSession.source_fingerprint == fingerprint
        )
    )
    return result.scalar_one_or_none()


async def insert_imported_session(db: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a session row (values by column name) unless the owner has one with the same
    source fingerprint; False then. ON CONFLICT rather than a savepoint: a concurrent import
    of the same source waits for the first and then finds it."""
    dialect = db.get_bind().dialect.name
    insert_session = (
        pg_insert(_SESSION_TABLE) if dialect == "postgresql" else sqlite_insert(_SESSION_TABLE)
    )
    stmt = (
        insert_session.values(**values)
        .on_conflict_do_nothing(index_elements=["user_id", "source_fingerprint"])
        .returning(_SESSION_TABLE.c.id)
    )
    return (await db.execute(stmt)).first() is not None
