"""A streamed delta: the guarded length update and its chunk, and the chunks' text."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from chat_store.crud.generations import LeaseHolder
from chat_store.crud.messages.rows import StoredMessage
from chat_store.crud.messages.sequence import bump_statement
from chat_store.crud.messages.tables import CHUNK_TABLE, MESSAGE, MESSAGE_TABLE
from chat_store.db import ByDialect, fetch_one
from chat_store.models import Generation, MessageChunk
from chat_store.models.message import OPEN_STATUSES

_INSERT_CHUNK = insert(CHUNK_TABLE)

_OWN_MESSAGE = (
    MESSAGE.id == bindparam("b_message_id"),
    MESSAGE.session_id == bindparam("b_session_id"),
    MESSAGE.user_id == bindparam("b_user_id"),
)
# A generation's writer still holds the answer's lease, in the run it was given (`attempt`):
# a run whose lease another run took over writes nothing more, even before it hears so.
_LEASE_HELD = or_(
    bindparam("b_lease_owner", type_=String).is_(None),
    exists().where(
        Generation.message_id == bindparam("b_message_id"),
        Generation.owner == bindparam("b_lease_owner", type_=String),
        Generation.attempt == bindparam("b_lease_attempt", type_=Integer),
    ),
)
# Open, still at the delta's offset, within the size limit with it, and (a generation's
# write) by the lease's holder.
_DELTA_FITS = and_(
    # The open statuses written into the SQL: an IN over bound values is re-rendered on every
    # execution (SQLAlchemy's "expanding" parameters), five times in the Postgres statement.
    MESSAGE.status.in_([literal_column(f"'{status}'", String) for status in OPEN_STATUSES]),
    MESSAGE.partial_length == bindparam("b_offset"),
    MESSAGE.partial_bytes + bindparam("b_size_bytes") <= bindparam("b_max_bytes"),
    _LEASE_HELD,
)
_DELTA_CHANGES: dict[str, Any] = {
    "partial_length": MESSAGE.partial_length + bindparam("b_length"),
    "partial_bytes": MESSAGE.partial_bytes + bindparam("b_size_bytes"),
    "status": "in_progress",
    "updated_at": bindparam("b_now"),
}
_APPEND_GUARDED = (
    update(MESSAGE_TABLE)
    .where(*_OWN_MESSAGE, _DELTA_FITS)
    .values(**_DELTA_CHANGES, version=bindparam("b_version"))
    .returning(*MESSAGE_TABLE.c)
)


def _append_delta_statement() -> Select[Any]:
    """Postgres: the version bump, the guarded update and the chunk insert as one statement.

    The message's new version is read from the session's bump, so the session row is locked
    first and the message's second: the lock order of every other write.

    The guard is evaluated in SET, not in WHERE. A statement's snapshot is taken when it
    starts, before it waits for the session row; a WHERE on the message's length would be
    checked against the row as it was then and skip it, refusing a delta whose predecessor
    committed while this one waited. Found by its id alone, the message row is locked and, if it
    changed meanwhile, re-read (READ COMMITTED), and SET sees the row as it is now. A delta the
    guard refuses leaves every column as it was; the message's version then differs from the
    bump's, and the chunk is inserted only when they match.
    """
    bumped = bump_statement(counts=False, touch=False).cte("bumped")
    new_version = select(bumped.c.history_version).scalar_subquery()
    guarded = {
        name: case((_DELTA_FITS, value), else_=MESSAGE[name])
        for name, value in {**_DELTA_CHANGES, "version": new_version}.items()
    }
    moved = (
        update(MESSAGE_TABLE)
        .where(*_OWN_MESSAGE, select(bumped.c.history_version).exists())
        .values(**guarded)
        .returning(*MESSAGE_TABLE.c)
        .cte("moved")
    )
    applied = moved.c.version == bumped.c.history_version
    chunk = (
        insert(CHUNK_TABLE)
        .from_select(
            ["message_id", "start", "text"],
            select(
                moved.c.id,
                bindparam("b_offset", type_=Integer),
                bindparam("b_text", type_=Text),
            ).select_from(moved.join(bumped, applied)),
        )
        .cte("chunk")
    )
    return (
        select(bumped.c.history_version.label("b_history_version"), *moved.c)
        .select_from(bumped.outerjoin(moved, applied))
        .add_cte(chunk)
    )


async def _append_delta_in_steps(db: AsyncSession, params: dict[str, Any]) -> dict[str, Any] | None:
    """SQLite: the version bump, the guarded update and the chunk insert in turn."""
    bumped = (await db.execute(bump_statement(counts=False, touch=False), params)).first()
    if bumped is None:
        return None
    version = bumped[0]
    guarded = (await db.execute(_APPEND_GUARDED, {**params, "b_version": version})).first()
    if guarded is None:
        return {"b_history_version": version, MESSAGE.id.name: None}
    chunk = {"message_id": params["b_message_id"], "start": params["b_offset"]}
    await db.execute(_INSERT_CHUNK, {**chunk, "text": params["b_text"]})
    return {"b_history_version": version, **guarded._mapping}


_APPEND_DELTA = ByDialect(postgresql=_append_delta_statement(), sqlite=_append_delta_in_steps)


@dataclass(frozen=True)
class Delta:
    """One delta for a streaming message: `text` goes at code point `offset`, if the message
    is still open, still at that length, and stays within `max_bytes`."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    message_id: uuid.UUID
    offset: int
    text: str
    size_bytes: int
    max_bytes: int
    now: datetime
    # A generation's write: the lease (owner, attempt) it must still hold. None: a client's.
    lease: LeaseHolder | None = None

    def params(self) -> dict[str, Any]:
        owner, attempt = self.lease if self.lease is not None else (None, None)
        return {
            "b_lease_owner": owner,
            "b_lease_attempt": attempt,
            "b_message_id": self.message_id,
            "b_session_id": self.session_id,
            "b_user_id": self.user_id,
            "b_offset": self.offset,
            "b_length": len(self.text),
            "b_size_bytes": self.size_bytes,
            "b_max_bytes": self.max_bytes,
            "b_now": self.now,
            "b_text": self.text,
        }


async def append_delta(
    db: AsyncSession, delta: Delta, *, standalone: bool
) -> tuple[int, StoredMessage | None] | None:
    """Bump the session's history version, then advance the message's stored length by the
    delta and store its text if, and only if, the length is still `offset`.

    The guard makes the append a compare-and-set: two writers at one offset cannot both win.
    Returns the new history version with the updated message, or with None when the guard
    refused (the caller finds out why); None when the session is missing or not the caller's.
    `standalone`: see db.fetch_one.
    """
    values = await fetch_one(db, _APPEND_DELTA, delta.params(), standalone=standalone)
    if values is None:
        return None
    if values[MESSAGE.id.name] is None:
        return values["b_history_version"], None
    return values["b_history_version"], StoredMessage.from_columns(values)


async def insert_chunk(db: AsyncSession, message_id: uuid.UUID, start: int, text: str) -> None:
    await db.execute(_INSERT_CHUNK, {"message_id": message_id, "start": start, "text": text})


async def chunk_texts(db: AsyncSession, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The appended deltas of each message, joined in order."""
    parts = await chunk_parts(db, message_ids)
    return {message_id: text for message_id, (_, text) in parts.items()}


async def chunk_parts(
    db: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, str]]:
    """The appended deltas of each message, joined in order, with the offset the first one
    starts at (where the folded prefix ends, when the row read before still holds)."""
    if not message_ids:
        return {}
    result = await db.execute(
        select(MessageChunk.message_id, MessageChunk.start, MessageChunk.text)
        .where(MessageChunk.message_id.in_(message_ids))
        .order_by(MessageChunk.message_id, MessageChunk.start)
    )
    parts: dict[uuid.UUID, tuple[int, list[str]]] = {}
    for message_id, start, text in result:
        parts.setdefault(message_id, (start, []))[1].append(text)
    return {message_id: (start, "".join(texts)) for message_id, (start, texts) in parts.items()}


async def delete_chunks(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(delete(MessageChunk).where(MessageChunk.message_id == message_id))
