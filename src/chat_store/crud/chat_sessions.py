from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.crud.generations import session_generating
from chat_store.crud.pagination import PageRequest, fetch_page
from chat_store.db import ByDialect, add_row, fetch_one
from chat_store.models import ChatSession, Generation, Message
from chat_store.models.base import attribute_columns


async def exists(db: AsyncSession, session_id: uuid.UUID) -> bool:
    # Any owner: ids are global, so a taken id is taken for everyone.
    result = await db.execute(select(ChatSession.id).where(ChatSession.id == session_id))
    return result.scalar_one_or_none() is not None


_TABLE = cast(Table, ChatSession.__table__)
_COLUMNS = attribute_columns(ChatSession)
_INSERT_NEW = ByDialect(
    postgresql=pg_insert(_TABLE)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(_TABLE.c.id),
    sqlite=sqlite_insert(_TABLE)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(_TABLE.c.id),
)


async def insert_if_new(db: AsyncSession, row: ChatSession, *, standalone: bool) -> bool:
    """Insert a fully populated session row in one statement (no ORM flush); False when its id
    is taken. Every attribute must be set: column defaults are not applied to `row`.
    `standalone`: see db.fetch_one."""
    params = {column: getattr(row, key) for key, column in _COLUMNS}
    return await fetch_one(db, _INSERT_NEW, params, standalone=standalone) is not None


async def create(db: AsyncSession, row: ChatSession) -> ChatSession:
    return await add_row(db, row)


async def get_for_owner(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, *, for_update: bool = False
) -> ChatSession | None:
    stmt = select(ChatSession).where(ChatSession.id == session_id, ChatSession.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    result = await db.execute(stmt)
    return result.scalar_one_or_none()


async def get_sort_key(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> tuple[Any, ...] | None:
    result = await db.execute(
        select(ChatSession.last_activity_at, ChatSession.id).where(
            ChatSession.id == session_id, ChatSession.user_id == user_id
        )
    )
    row = result.one_or_none()
    return tuple(row) if row is not None else None


async def list_for_owner(
    db: AsyncSession,
    user_id: uuid.UUID,
    page: PageRequest,
    *,
    favorite: bool | None,
    status: str | None,
    title_contains: str | None,
    repo: str | None,
    updated_after: datetime | None,
    archived: bool | None,
) -> tuple[list[ChatSession], bool]:
    # Served by ix_chat_session_user_activity (user_id, last_activity_at, id).
    stmt = select(ChatSession).where(ChatSession.user_id == user_id)
    if favorite is not None:
        stmt = stmt.where(ChatSession.is_favorite.is_(favorite))
    if status is not None:
        stmt = stmt.where(ChatSession.status == status)
    if title_contains:
        stmt = stmt.where(ChatSession.title.icontains(title_contains, autoescape=True))
    if repo is not None:
        stmt = stmt.where(ChatSession.workspace_repo == repo)
    if updated_after is not None:
        stmt = stmt.where(ChatSession.updated_at > updated_after)
    if archived is not None:
        is_archived = ChatSession.archived_at.is_not(None)
        stmt = stmt.where(is_archived if archived else ~is_archived)
    return await fetch_page(db, stmt, [ChatSession.last_activity_at, ChatSession.id], page)


async def delete_for_owner(db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    # Messages go with it through ON DELETE CASCADE.
    result = await db.execute(
        delete(ChatSession).where(ChatSession.id == session_id, ChatSession.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def idle_summary(db: AsyncSession, cutoff: datetime) -> tuple[int, int]:
    """How many sessions (and messages in them) are idle since `cutoff`, as idle_batch
    chooses them."""
    result = await db.execute(
        select(func.count(), func.coalesce(func.sum(ChatSession.message_count), 0)).where(
            _idle(cutoff)
        )
    )
    sessions, messages = result.one()
    return int(sessions), int(messages)


@dataclass(frozen=True)
class DeletedBatch:
    chosen: int  # sessions idle at the select (fewer than the batch: the last batch)
    sessions: int  # of those, deleted (a session active again since is kept)
    messages: int
    archive_keys: list[str]  # of the deleted sessions that have an archive object


def _idle(cutoff: datetime) -> ColumnElement[bool]:
    """No activity since `cutoff`, and no answer being generated in it."""
    return and_(ChatSession.last_activity_at < cutoff, ~session_generating(cutoff))


async def idle_batch(db: AsyncSession, cutoff: datetime, batch: int) -> list[uuid.UUID]:
    """Up to `batch` sessions idle since `cutoff`, the longest idle first."""
    chosen = select(ChatSession.id).where(_idle(cutoff))
    result = await db.execute(chosen.order_by(ChatSession.last_activity_at).limit(batch))
    return list(result.scalars())


async def delete_idle(db: AsyncSession, ids: list[uuid.UUID], cutoff: datetime) -> DeletedBatch:
    """Delete the sessions of `ids` (an `idle_batch`) still idle since `cutoff` (messages
    cascade). What was deleted is what the delete returns, not what the select saw: a session
    active again, or archived meanwhile (a key recorded), is counted as it is."""
    if not ids:
        return DeletedBatch(0, 0, 0, [])
    # The conditions again: a session that became active, or began generating, since the
    # select is kept.
    deleted = (
        await db.execute(
            delete(ChatSession)
            .where(ChatSession.id.in_(ids), _idle(cutoff))
            .returning(ChatSession.message_count, ChatSession.archive_key)
        )
    ).all()
    keys = [str(key) for _, key in deleted if key is not None]
    messages = sum(int(count) for count, _ in deleted)
    return DeletedBatch(len(ids), len(deleted), messages, keys)


async def forget_sources_shared(db: AsyncSession, of_user: uuid.UUID, with_user: uuid.UUID) -> int:
    """Clear the source fingerprint of `of_user`'s sessions imported from a conversation that
    `with_user` imported too; returns how many."""
    shared = select(ChatSession.source_fingerprint).where(
        ChatSession.user_id == with_user, ChatSession.source_fingerprint.is_not(None)
    )
    result = await db.execute(
        update(ChatSession)
        .where(ChatSession.user_id == of_user, ChatSession.source_fingerprint.in_(shared))
        .values(source_fingerprint=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def move_to_owner(
    db: AsyncSession, from_user: uuid.UUID, to_user: uuid.UUID
) -> list[uuid.UUID]:
    """Give every session of one owner (its messages, and the leases of their generations) to
    another; returns the sessions' ids."""
    moved = await db.scalars(
        update(ChatSession)
        .where(ChatSession.user_id == from_user)
        .values(user_id=to_user)
        .returning(ChatSession.id)
    )
    session_ids = list(moved)
    await db.execute(update(Message).where(Message.user_id == from_user).values(user_id=to_user))
    # Left behind, a lease would go with the old owner's row (deleted after a guest's claim),
    # and an answer being generated would have no lease for a sweep to continue.
    await db.execute(
        update(Generation).where(Generation.user_id == from_user).values(user_id=to_user)
    )
    return session_ids


async def flush(db: AsyncSession) -> None:
    await db.flush()
