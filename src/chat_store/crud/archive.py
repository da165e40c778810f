"""Statements of archiving and restoring: the session row's archive state and its messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.crud.generations import session_generating
from chat_store.crud.messages import INSERT_BATCH, StoredMessage
from chat_store.db import fetch_one
from chat_store.models import ArchiveDeletion, ArchivedMessage, ChatSession, Generation, Message

_SESSION_TABLE = cast(Table, ChatSession.__table__)
_MESSAGE_TABLE = cast(Table, Message.__table__)
_GENERATION_TABLE = cast(Table, Generation.__table__)
_S = _SESSION_TABLE.c

# A primary-key read, built once: it runs before every message request (services/archive/).
_ARCHIVED_AT = select(_S.archived_at).where(
    _S.id == bindparam("b_session_id"), _S.user_id == bindparam("b_user_id")
)


async def is_archived(db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """Whether the owner's session is archived (False when there is no such session). Read as
    a statement that stands alone (see db.fetch_one): when nothing has run in the session yet,
    outside its transaction, so a request whose write stands alone stays so."""
    params = {"b_session_id": session_id, "b_user_id": user_id}
    row = await fetch_one(db, _ARCHIVED_AT, params, standalone=True)
    return row is not None and row["archived_at"] is not None


def _due(cutoff: datetime) -> ColumnElement[bool]:
    """Not archived, idle since `cutoff`, not restored since it either (a restored session
    gets a whole idle period again before it goes back), and with no answer being generated
    (a continue does not move the session's activity)."""
    return and_(
        ChatSession.archived_at.is_(None),
        ChatSession.last_activity_at < cutoff,
        or_(ChatSession.restored_at.is_(None), ChatSession.restored_at < cutoff),
        ~session_generating(cutoff),
    )


async def due_sessions(
    db: AsyncSession, cutoff: datetime, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[tuple[datetime, uuid.UUID]]:
    """(last activity, id) of sessions due for archiving, oldest first, after a keyset cursor.
    Served by ix_chat_session_archive_due (partial: archived sessions are not in it)."""
    stmt = select(ChatSession.last_activity_at, ChatSession.id).where(_due(cutoff))
    if after is not None:
        stmt = stmt.where(
            or_(
                ChatSession.last_activity_at > after[0],
                and_(ChatSession.last_activity_at == after[0], ChatSession.id > after[1]),
            )
        )
    stmt = stmt.order_by(ChatSession.last_activity_at, ChatSession.id).limit(limit)
    return [(row[0], row[1]) for row in await db.execute(stmt)]


async def due_summary(db: AsyncSession, cutoff: datetime) -> tuple[int, int]:
    result = await db.execute(
        select(func.count(), func.coalesce(func.sum(ChatSession.message_count), 0)).where(
            _due(cutoff)
        )
    )
    sessions, messages = result.one()
    return int(sessions), int(messages)


async def unfinished(db: AsyncSession, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """Sessions with an archive key and not archived: an archive not committed, or a restore
    whose object is still to be deleted. Served by ix_chat_session_archive_key (partial)."""
    stmt = select(ChatSession.id).where(
        ChatSession.archive_key.is_not(None), ChatSession.archived_at.is_(None)
    )
    if after is not None:
        stmt = stmt.where(ChatSession.id > after)
    result = await db.execute(stmt.order_by(ChatSession.id).limit(limit))
    return list(result.scalars())


async def claim(
    db: AsyncSession, session_id: uuid.UUID, key: str, cutoff: datetime
) -> tuple[str, int] | None:
    """Record the archive's object key on a session due for archiving (an unfinished archive's
    key is kept, so its object is the one written again); returns (key, history version), or
    None when the session is not due."""
    result = await db.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id, _due(cutoff))
        .values(archive_key=func.coalesce(ChatSession.archive_key, key))
        .returning(ChatSession.archive_key, ChatSession.history_version)
    )
    row = result.one_or_none()
    return (str(row[0]), int(row[1])) if row is not None else None


async def get_session(
    db: AsyncSession, session_id: uuid.UUID, *, user_id: uuid.UUID | None = None
) -> ChatSession | None:
    """The session (of `user_id`, when given), read again from the database."""
    stmt = select(ChatSession).where(ChatSession.id == session_id)
    if user_id is not None:
        stmt = stmt.where(ChatSession.user_id == user_id)
    result = await db.execute(stmt.execution_options(populate_existing=True))
    return result.scalar_one_or_none()


def _unarchived_with(session_id: uuid.UUID, key: str) -> tuple[ColumnElement[bool], ...]:
    """The session, while it is not archived and still has this archive key."""
    return (
        ChatSession.id == session_id,
        ChatSession.archived_at.is_(None),
        ChatSession.archive_key == key,
    )


async def mark_archived(
    db: AsyncSession, session_id: uuid.UUID, key: str, version: int, now: datetime
) -> bool:
    """Set archived_at if the session is still unarchived, still has this key, and has not
    changed since `version` was read. Takes the session's row lock until commit.

    The history version goes up: its messages leave the table, and a window of them a reader
    cached meanwhile (from rows read as the archive committed) must not be taken for the
    history the restore brings back."""
    result = await db.execute(
        update(ChatSession)
        .where(*_unarchived_with(session_id, key), ChatSession.history_version == version)
        .values(archived_at=now, history_version=ChatSession.history_version + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def is_generating(db: AsyncSession, session_id: uuid.UUID, since: datetime) -> bool:
    """Whether an answer of the session is being generated or waits to be continued, as
    session_generating(since) says. Read under the session's row lock, as a statement of its
    own: it sees every lease committed before the lock was taken (a continue takes that lock
    too)."""
    generating = select(ChatSession.id).where(
        ChatSession.id == session_id, session_generating(since)
    )
    return await db.scalar(generating) is not None


async def keep_archived_ids(db: AsyncSession, session_id: uuid.UUID) -> None:
    """The ids of the session's messages into archived_message, where they stay taken while
    the messages are only in the archive object (one INSERT ... SELECT: served by the
    (session_id, seq) unique index)."""
    await db.execute(
        insert(ArchivedMessage).from_select(
            ["message_id", "session_id"],
            select(Message.id, Message.session_id).where(Message.session_id == session_id),
        )
    )


async def delete_messages(db: AsyncSession, session_id: uuid.UUID) -> None:
    # Their chunks and generations go with them (ON DELETE CASCADE; the archive object carries
    # the generations); tombstones stay for the change feed.
    await db.execute(delete(Message).where(Message.session_id == session_id))


async def generations(db: AsyncSession, session_id: uuid.UUID) -> list[Generation]:
    """The session's generations (served by ix_generation_session_id), for its archive."""
    result = await db.execute(
        select(Generation)
        .where(Generation.session_id == session_id)
        .order_by(Generation.message_id)
    )
    return list(result.scalars())


async def taken_elsewhere(
    db: AsyncSession, session_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Which of `message_ids` another session's message has, stored or archived ({id: that
    session}): primary-key reads, in batches."""
    taken: dict[uuid.UUID, uuid.UUID] = {}
    for start in range(0, len(message_ids), INSERT_BATCH):
        batch = message_ids[start : start + INSERT_BATCH]
        stored = select(Message.id, Message.session_id).where(
            Message.id.in_(batch), Message.session_id != session_id
        )
        archived = select(ArchivedMessage.message_id, ArchivedMessage.session_id).where(
            ArchivedMessage.message_id.in_(batch), ArchivedMessage.session_id != session_id
        )
        result = await db.execute(union_all(stored, archived))
        taken.update((row[0], row[1]) for row in result)
    return taken


async def _insert_skipping(
    db: AsyncSession, table: Table, key: str, rows: list[dict[str, Any]]
) -> None:
    """Insert `rows` into `table` (INSERT_BATCH at a time), skipping those whose `key` is there
    already."""
    insert_into = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert_into(table).on_conflict_do_nothing(index_elements=[key])
    for start in range(0, len(rows), INSERT_BATCH):
        await db.execute(stmt, rows[start : start + INSERT_BATCH])


async def insert_missing_messages(db: AsyncSession, messages: list[StoredMessage]) -> None:
    """Insert messages, skipping those already there: a restore that stopped half-way is
    finished by running it again. (A row skipped must be the same message: the caller checks
    that no other session's message has one of the ids.)"""
    await _insert_skipping(db, _MESSAGE_TABLE, "id", [message.columns() for message in messages])


async def forget_archived_ids(db: AsyncSession, session_id: uuid.UUID) -> None:
    """The restored session's message ids leave archived_message: its messages' own rows
    hold them now."""
    await db.execute(delete(ArchivedMessage).where(ArchivedMessage.session_id == session_id))


async def insert_missing_generations(db: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert generations (columns as values), skipping those already there, as the messages."""
    await _insert_skipping(db, _GENERATION_TABLE, "message_id", rows)


async def mark_restored(db: AsyncSession, session_id: uuid.UUID, key: str, now: datetime) -> bool:
    """Clear archived_at if the session is still archived under `key`. Takes the session's
    row lock until commit."""
    result = await db.execute(
        update(ChatSession)
        .where(
            ChatSession.id == session_id,
            ChatSession.archived_at.is_not(None),
            ChatSession.archive_key == key,
        )
        .values(archived_at=None, restored_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_key(db: AsyncSession, session_id: uuid.UUID, key: str) -> bool:
    """Forget the archive key of a session that is not archived (its object is about to be
    deleted). Takes the session's row lock until commit."""
    result = await db.execute(
        update(ChatSession).where(*_unarchived_with(session_id, key)).values(archive_key=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def lock_keys(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID | None = None
) -> list[str]:
    """The archive keys of the owner's sessions (or of one of them). Every one of those rows is
    locked until commit, those without a key too, so that no archive records a key or commits
    on them meanwhile."""
    stmt = select(ChatSession.archive_key).where(ChatSession.user_id == user_id)
    if session_id is not None:
        stmt = stmt.where(ChatSession.id == session_id)
    result = await db.execute(stmt.with_for_update())
    return [str(key) for key in result.scalars() if key is not None]


async def lock_archive_key(db: AsyncSession, session_id: uuid.UUID) -> str | None:
    """The session's archive key (None when it has none, or there is no such session), its row
    locked until commit so that no archive commits on it, and no key is recorded, meanwhile."""
    result = await db.execute(
        select(ChatSession.archive_key).where(ChatSession.id == session_id).with_for_update()
    )
    return result.scalar_one_or_none()


_DELETION_TABLE = cast(Table, ArchiveDeletion.__table__)


async def queue_deletions(db: AsyncSession, keys: list[str], now: datetime) -> None:
    """List archive objects to delete once this transaction has committed (a key listed
    already stays listed once)."""
    if keys:
        rows = [{"key": key, "queued_at": now} for key in keys]
        await _insert_skipping(db, _DELETION_TABLE, "key", rows)


async def queued_deletions(db: AsyncSession, tried_before: datetime, limit: int) -> list[str]:
    """Listed archive objects not tried since `tried_before`: those never refused first, then
    those refused longest ago."""
    result = await db.execute(
        select(ArchiveDeletion.key)
        .where(or_(ArchiveDeletion.refused_at.is_(None), ArchiveDeletion.refused_at < tried_before))
        .order_by(ArchiveDeletion.refused_at.nulls_first(), ArchiveDeletion.key)
        .limit(limit)
    )
    return [str(key) for key in result.scalars()]


async def mark_refused(db: AsyncSession, keys: list[str], now: datetime) -> None:
    if keys:
        await db.execute(
            update(ArchiveDeletion).where(ArchiveDeletion.key.in_(keys)).values(refused_at=now)
        )


async def forget_deletions(db: AsyncSession, keys: list[str]) -> None:
    """Unlist archive objects that are deleted."""
    if keys:
        await db.execute(delete(ArchiveDeletion).where(ArchiveDeletion.key.in_(keys)))
