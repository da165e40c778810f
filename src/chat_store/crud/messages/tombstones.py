"""Tombstones: deleted messages, kept for the change feed's replay."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import UpdateBase

from chat_store.db import ByDialect, fetch_one
from chat_store.models import MessageTombstone

_T = MessageTombstone.__table__.c


def _replacing(insert: PgInsert | SqliteInsert) -> UpdateBase:
    # An id already tombstoned (written again after its deletion before ids were checked
    # against tombstones): the newest deletion is the one the change feed replays.
    return insert.on_conflict_do_update(
        index_elements=[_T.message_id],
        set_={name: insert.excluded[name] for name in ("session_id", "seq", "version")},
    ).returning(_T.message_id)


_ADD_TOMBSTONE = ByDialect(
    postgresql=_replacing(pg_insert(MessageTombstone)),
    sqlite=_replacing(sqlite_insert(MessageTombstone)),
)


async def add_tombstone(
    db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID, seq: int, version: int
) -> None:
    values = {"message_id": message_id, "session_id": session_id, "seq": seq, "version": version}
    await fetch_one(db, _ADD_TOMBSTONE, values)


async def deleted_since(
    db: AsyncSession,
    session_id: uuid.UUID,
    version: int,
    *,
    upto: int | None = None,
    limit: int | None = None,
) -> list[MessageTombstone]:
    """The session's deletions after `version` (up to `upto`), in version order."""
    stmt = select(MessageTombstone).where(
        MessageTombstone.session_id == session_id, MessageTombstone.version > version
    )
    if upto is not None:
        stmt = stmt.where(MessageTombstone.version <= upto)
    result = await db.execute(stmt.order_by(MessageTombstone.version).limit(limit))
    return list(result.scalars())
