"""Message rows: inserts (with the next seq), reads by id, by seq and by change."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import bindparam, delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud.messages.sequence import SeqReservation, reserve_statement
from chat_store.crud.messages.tables import MESSAGE, MESSAGE_ATTRS, MESSAGE_TABLE
from chat_store.db import ByDialect, fetch_one
from chat_store.models import Message

_INSERT_MESSAGE = insert(MESSAGE_TABLE)

# The columns a new message takes from the caller; seq and the versions come from the session.
_FROM_SESSION = ("seq", "created_version", "version")
_GIVEN_COLUMNS = [column for column in MESSAGE_TABLE.c if column.name not in _FROM_SESSION]


@functools.cache
def _append_one(*, expected: bool, titled: bool) -> ByDialect:
    """The session's next seq for one message, and its insert: on Postgres one statement (a
    data-modifying WITH), so the session row is locked from this statement to COMMIT with no
    round trip and no Python work in between; on SQLite the two statements in turn."""
    reserve = reserve_statement(expected=expected, titled=titled)
    reserved = reserve.cte("reserved")
    given = [bindparam(f"m_{column.name}", type_=column.type) for column in _GIVEN_COLUMNS]
    source = select(
        *given,
        reserved.c.last_seq,
        reserved.c.history_version,
        reserved.c.history_version,
    )
    in_one = (
        insert(MESSAGE_TABLE)
        .from_select([*(column.name for column in _GIVEN_COLUMNS), *_FROM_SESSION], source)
        .returning(MESSAGE.seq, MESSAGE.version)
    )

    async def in_steps(db: AsyncSession, params: dict[str, Any]) -> dict[str, Any] | None:
        taken = (await db.execute(reserve, params)).first()
        if taken is None:
            return None
        seq, version = taken
        row = {column.name: params[f"m_{column.name}"] for column in _GIVEN_COLUMNS}
        row.update(seq=seq, created_version=version, version=version)
        await db.execute(_INSERT_MESSAGE, row)
        return {"seq": seq, "version": version}

    return ByDialect(postgresql=in_one, sqlite=in_steps)


async def append_one(
    db: AsyncSession, values: dict[str, Any], reservation: SeqReservation, *, standalone: bool
) -> tuple[int, int] | None:
    """Insert one message (`values` by column name) with the session's next seq, which also
    gives its versions (whatever `values` holds for them); returns its (seq, version), or None as
    reserve_seqs does. `standalone`: see db.fetch_one."""
    write = _append_one(
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    params = {f"m_{column.name}": values[column.name] for column in _GIVEN_COLUMNS}
    params.update(reservation.params())
    appended = await fetch_one(db, write, params, standalone=standalone)
    return None if appended is None else (appended["seq"], appended["version"])


async def any_message_id_exists(db: AsyncSession, ids: Iterable[uuid.UUID]) -> bool:
    wanted = list(ids)
    if not wanted:
        return False
    result = await db.execute(select(Message.id).where(Message.id.in_(wanted)).limit(1))
    return result.first() is not None


async def insert_messages(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows keyed by column name; a Core insert (no ORM unit of work) on the hot append path."""
    # One row is the common case: a plain INSERT, not the executemany path.
    await db.execute(_INSERT_MESSAGE, rows[0] if len(rows) == 1 else list(rows))


async def get_for_owner(
    db: AsyncSession,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Message | None:
    stmt = select(Message).where(
        Message.id == message_id, Message.session_id == session_id, Message.user_id == user_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    result = await db.execute(stmt)
    return result.scalar_one_or_none()


async def get_seq(db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID) -> int | None:
    result = await db.execute(
        select(Message.seq).where(Message.id == message_id, Message.session_id == session_id)
    )
    return result.scalar_one_or_none()


@dataclass(slots=True)
class MessageValues:
    """A message's columns as a page read returns them: plain values, no ORM state. Loading
    100 ORM objects into the session (identity map, instrumented state) cost more CPU than
    everything else in an uncached page read, and a SQLAlchemy row's attributes are slow to
    read one by one."""

    id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    seq: int
    role: str
    content: str | None
    partial_content: str | None
    partial_length: int
    partial_bytes: int
    status: str
    error_message: str | None
    context: dict[str, Any] | None
    metadata_: dict[str, Any]
    token_count: int | None
    model: str | None
    latency_ms: int | None
    created_version: int
    version: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


# A message as the reads use it.
MessageRow: TypeAlias = Message | MessageValues

# The message's columns in MessageValues' order, under its attribute names (`metadata_`).
_COLUMN_OF_ATTRIBUTE = dict(MESSAGE_ATTRS)
_MESSAGE_FIELDS = [
    MESSAGE_TABLE.c[_COLUMN_OF_ATTRIBUTE[field.name]].label(field.name)
    for field in dataclasses.fields(MessageValues)
]


async def list_by_seq(
    db: AsyncSession,
    session_id: uuid.UUID,
    *,
    after_seq: int | None,
    before_seq: int | None,
    descending: bool,
    limit: int,
) -> tuple[list[MessageRow], bool]:
    """One page in seq order. Served by uq_message_session_id_seq: a range scan of `limit`
    rows wherever the page lies, so the last page of a huge session costs what a small one does."""
    stmt = select(*_MESSAGE_FIELDS).where(MESSAGE.session_id == session_id)
    if after_seq is not None:
        stmt = stmt.where(MESSAGE.seq > after_seq)
    if before_seq is not None:
        stmt = stmt.where(MESSAGE.seq < before_seq)
    order = MESSAGE.seq.desc() if descending else MESSAGE.seq.asc()
    result = await db.execute(stmt.order_by(order).limit(limit + 1))
    rows: list[MessageRow] = [MessageValues(*row) for row in result]
    return rows[:limit], len(rows) > limit


async def changed_since(
    db: AsyncSession, session_id: uuid.UUID, cursor: tuple[int, int], limit: int
) -> list[Message]:
    """Messages changed after the (version, seq) cursor, in change order (the change feed's
    replay). A batch append gives several messages one version, so seq breaks the tie."""
    result = await db.execute(
        select(Message)
        .where(
            Message.session_id == session_id,
            tuple_(Message.version, Message.seq) > tuple_(*cursor),
        )
        .order_by(Message.version, Message.seq)
        .limit(limit)
    )
    return list(result.scalars())


async def newest_resumable(db: AsyncSession, session_id: uuid.UUID) -> Message | None:
    result = await db.execute(
        select(Message)
        .where(
            Message.session_id == session_id,
            Message.role == "assistant",
            Message.status.in_(("pending", "in_progress", "failed")),
        )
        .order_by(Message.seq.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def delete_message(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(delete(Message).where(Message.id == message_id))


async def flush(db: AsyncSession) -> None:
    await db.flush()
