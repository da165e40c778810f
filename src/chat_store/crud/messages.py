from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, cast

from sqlalchemy import (
    Insert,
    Integer,
    Select,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from chat_store.db import fetch_autocommitted
from chat_store.models import ChatSession, Message, MessageChunk, MessageTombstone
from chat_store.models.base import attribute_columns

_OPEN = ("pending", "in_progress")
_MESSAGE_TABLE = cast(Table, Message.__table__)
_SESSION_TABLE = cast(Table, ChatSession.__table__)
_CHUNK_TABLE = cast(Table, MessageChunk.__table__)

# The statements of the append and delta paths are built once, with bound parameters, as Core
# statements on the tables: building one per request (and walking it for its cache key) and
# the ORM's bulk-UPDATE machinery cost more CPU than the round trip itself.
_S = _SESSION_TABLE.c
_M = _MESSAGE_TABLE.c


@functools.cache
def _reserve_statement(*, expected: bool, titled: bool) -> Update:
    values: dict[str, Any] = {
        "last_seq": _S.last_seq + bindparam("b_count"),
        "message_count": _S.message_count + bindparam("b_count"),
        "total_tokens": _S.total_tokens + bindparam("b_tokens"),
        # One version per message: the change feed tells each of them apart.
        "history_version": _S.history_version + bindparam("b_count"),
        "last_message_at": bindparam("b_now"),
        "last_activity_at": bindparam("b_now"),
        "updated_at": bindparam("b_now"),
    }
    if titled:
        values["title"] = func.coalesce(_S.title, bindparam("b_title", type_=String))
    stmt = update(_SESSION_TABLE).where(
        _S.id == bindparam("b_session_id"), _S.user_id == bindparam("b_user_id")
    )
    if expected:
        stmt = stmt.where(_S.last_seq == bindparam("b_expected_last_seq"))
    return stmt.values(**values).returning(_S.last_seq, _S.history_version)


@functools.cache
def _bump_statement(*, counts: bool, touch: bool) -> Update:
    values: dict[str, Any] = {"history_version": _S.history_version + 1}
    if counts:
        values["message_count"] = _S.message_count + bindparam("b_count_delta")
        values["total_tokens"] = _S.total_tokens + bindparam("b_token_delta")
    if touch:
        values["updated_at"] = bindparam("b_now")
    return (
        update(_SESSION_TABLE)
        .where(_S.id == bindparam("b_session_id"), _S.user_id == bindparam("b_user_id"))
        .values(**values)
        .returning(_S.history_version)
    )


_HISTORY_STATE = select(_S.history_version, _S.last_seq, _S.created_at).where(
    _S.id == bindparam("b_session_id"), _S.user_id == bindparam("b_user_id")
)
_MESSAGE_ATTRS = attribute_columns(Message)
_INSERT_CHUNK = insert(_CHUNK_TABLE)
_INSERT_MESSAGE = insert(_MESSAGE_TABLE)


@dataclass(frozen=True)
class SeqReservation:
    """Which session takes new seqs, for how many messages, and on what condition."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    count: int
    tokens: int
    now: datetime
    expected_last_seq: int | None
    auto_title: str | None

    def params(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "b_session_id": self.session_id,
            "b_user_id": self.user_id,
            "b_count": self.count,
            "b_tokens": self.tokens,
            "b_now": self.now,
        }
        if self.expected_last_seq is not None:
            values["b_expected_last_seq"] = self.expected_last_seq
        if self.auto_title is not None:
            values["b_title"] = self.auto_title
        return values


async def reserve_seqs(db: AsyncSession, reservation: SeqReservation) -> tuple[int, int] | None:
    """Take `count` seqs for new messages and update the counters in one statement.

    The UPDATE row-locks the session until commit, so concurrent appends to one session queue
    here and each gets the next numbers; a rolled-back append gives its numbers back. Returns
    the new (last seq, history version) — message i of n gets seq and version `last - n + 1 + i`
    — or None when the session is missing, not the caller's, or not at expected_last_seq.
    """
    stmt = _reserve_statement(
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    result = await db.execute(stmt, reservation.params())
    row = result.one_or_none()
    return (row[0], row[1]) if row is not None else None


# The columns a new message takes from the caller; seq and the versions come from the session.
_FROM_SESSION = ("seq", "created_version", "version")
_GIVEN_COLUMNS = [column for column in _MESSAGE_TABLE.c if column.name not in _FROM_SESSION]


@functools.cache
def _append_one_statement(*, expected: bool, titled: bool) -> Insert:
    """Postgres: take the next seq and insert the message in one statement (a data-modifying
    CTE), so the session row is locked from this statement to COMMIT, with no round trip and no
    Python work in between."""
    reserved = _reserve_statement(expected=expected, titled=titled).cte("reserved")
    given = [bindparam(f"m_{column.name}", type_=column.type) for column in _GIVEN_COLUMNS]
    source = select(
        *given,
        reserved.c.last_seq,
        reserved.c.history_version,
        reserved.c.history_version,
    )
    return (
        insert(_MESSAGE_TABLE)
        .from_select([*(column.name for column in _GIVEN_COLUMNS), *_FROM_SESSION], source)
        .returning(_M.seq, _M.version)
    )


async def append_one(
    db: AsyncSession, values: dict[str, Any], reservation: SeqReservation, *, autocommit: bool
) -> tuple[int, int] | None:
    """Insert one message (`values` by column name) with the session's next seq, which also
    gives its versions (whatever `values` holds for them); returns its (seq, version), or None as
    reserve_seqs does. On Postgres one statement, committed by itself with `autocommit` (see
    db.fetch_autocommitted); elsewhere reserve_seqs, then the insert."""
    if db.get_bind().dialect.name != "postgresql":
        reserved = await reserve_seqs(db, reservation)
        if reserved is None:
            return None
        seq, version = reserved
        await insert_messages(
            db, [{**values, "seq": seq, "created_version": version, "version": version}]
        )
        return seq, version
    stmt = _append_one_statement(
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    params = {f"m_{column.name}": values[column.name] for column in _GIVEN_COLUMNS}
    params.update(reservation.params())
    if autocommit:
        appended = await fetch_autocommitted(db, stmt, params)
        return (appended["seq"], appended["version"]) if appended is not None else None
    row = (await db.execute(stmt, params)).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def get_history_state(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> tuple[int, int, datetime] | None:
    """(history_version, last_seq, created_at) of the caller's session, or None: one
    primary-key read."""
    result = await db.execute(_HISTORY_STATE, {"b_session_id": session_id, "b_user_id": user_id})
    row = result.one_or_none()
    return (row[0], row[1], row[2]) if row is not None else None


async def adjust_counters(
    db: AsyncSession, session_id: uuid.UUID, *, count_delta: int = 0, token_delta: int = 0
) -> None:
    """Counters only (the caller already bumped the version and holds the row lock)."""
    await db.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(
            message_count=ChatSession.message_count + count_delta,
            total_tokens=ChatSession.total_tokens + token_delta,
        )
    )


async def bump_session(
    db: AsyncSession,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    now: datetime,
    count_delta: int = 0,
    token_delta: int = 0,
    touch: bool = True,
) -> int | None:
    """Record a change to the caller's session's messages; returns the new history version,
    or None when the session is missing or not the caller's.

    Every write to existing messages takes this session row lock first, then the message's:
    one lock order everywhere, so concurrent writers queue instead of deadlocking.
    """
    counts = bool(count_delta or token_delta)
    params: dict[str, Any] = {"b_session_id": session_id, "b_user_id": user_id}
    if counts:
        params.update(b_count_delta=count_delta, b_token_delta=token_delta)
    if touch:
        params["b_now"] = now
    result = await db.execute(_bump_statement(counts=counts, touch=touch), params)
    return result.scalar_one_or_none()


async def reset_last_message_at(db: AsyncSession, session_id: uuid.UUID) -> None:
    """After a deletion: last_message_at is the newest remaining message's (null when none).
    Run under the session row lock (bump_session), so a concurrent append's time is kept."""
    newest = (
        select(Message.created_at)
        .where(Message.session_id == session_id)
        .order_by(Message.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    await db.execute(
        update(ChatSession).where(ChatSession.id == session_id).values(last_message_at=newest)
    )


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
_COLUMN_OF_ATTRIBUTE = dict(_MESSAGE_ATTRS)
_MESSAGE_FIELDS = [
    _MESSAGE_TABLE.c[_COLUMN_OF_ATTRIBUTE[field.name]].label(field.name)
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
    stmt = select(*_MESSAGE_FIELDS).where(_M.session_id == session_id)
    if after_seq is not None:
        stmt = stmt.where(_M.seq > after_seq)
    if before_seq is not None:
        stmt = stmt.where(_M.seq < before_seq)
    order = _M.seq.desc() if descending else _M.seq.asc()
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


_OWN_MESSAGE = (
    _M.id == bindparam("b_message_id"),
    _M.session_id == bindparam("b_session_id"),
    _M.user_id == bindparam("b_user_id"),
)
# Open, still at the delta's offset, and within the size limit with it.
_DELTA_FITS = and_(
    # The open statuses written into the SQL: an IN over bound values is re-rendered on every
    # execution (SQLAlchemy's "expanding" parameters), five times in the Postgres statement.
    _M.status.in_([literal_column(f"'{status}'", String) for status in _OPEN]),
    _M.partial_length == bindparam("b_offset"),
    _M.partial_bytes + bindparam("b_size_bytes") <= bindparam("b_max_bytes"),
)
_DELTA_CHANGES: dict[str, Any] = {
    "partial_length": _M.partial_length + bindparam("b_length"),
    "partial_bytes": _M.partial_bytes + bindparam("b_size_bytes"),
    "status": "in_progress",
    "updated_at": bindparam("b_now"),
}
_APPEND_GUARDED = (
    update(_MESSAGE_TABLE)
    .where(*_OWN_MESSAGE, _DELTA_FITS)
    .values(**_DELTA_CHANGES, version=bindparam("b_version"))
    .returning(*_MESSAGE_TABLE.c)
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
    bumped = _bump_statement(counts=False, touch=False).cte("bumped")
    new_version = select(bumped.c.history_version).scalar_subquery()
    guarded = {
        name: case((_DELTA_FITS, value), else_=_M[name])
        for name, value in {**_DELTA_CHANGES, "version": new_version}.items()
    }
    moved = (
        update(_MESSAGE_TABLE)
        .where(*_OWN_MESSAGE, select(bumped.c.history_version).exists())
        .values(**guarded)
        .returning(*_MESSAGE_TABLE.c)
        .cte("moved")
    )
    applied = moved.c.version == bumped.c.history_version
    chunk = (
        insert(_CHUNK_TABLE)
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


_APPEND_DELTA = _append_delta_statement()


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

    def params(self) -> dict[str, Any]:
        return {
            "b_message_id": self.message_id,
            "b_session_id": self.session_id,
            "b_user_id": self.user_id,
            "b_offset": self.offset,
            "b_length": len(self.text),
            "b_size_bytes": self.size_bytes,
            "b_max_bytes": self.max_bytes,
            "b_now": self.now,
        }


async def append_delta(
    db: AsyncSession, delta: Delta, *, autocommit: bool
) -> tuple[int, MessageValues | None] | None:
    """Bump the session's history version, then advance the message's stored length by the
    delta and store its text if, and only if, the length is still `offset`.

    The guard makes the append a compare-and-set: two writers at one offset cannot both win.
    Returns the new history version with the updated message, or with None when the guard
    refused (the caller finds out why); None when the session is missing or not the caller's.
    On Postgres one statement, committed by itself with `autocommit` (see
    db.fetch_autocommitted); elsewhere three.
    """
    params = delta.params()
    if db.get_bind().dialect.name == "postgresql":
        params["b_text"] = delta.text
        values: Mapping[str, Any] | None
        if autocommit:
            values = await fetch_autocommitted(db, _APPEND_DELTA, params)
        else:
            row = (await db.execute(_APPEND_DELTA, params)).one_or_none()
            values = None if row is None else row._mapping
        if values is None:
            return None
        if values[_M.id.name] is None:
            return values["b_history_version"], None
        return values["b_history_version"], _detached(values)
    version = await bump_session(db, delta.user_id, delta.session_id, now=delta.now, touch=False)
    if version is None:
        return None
    params["b_version"] = version
    guarded = (await db.execute(_APPEND_GUARDED, params)).one_or_none()
    if guarded is None:
        return version, None
    await insert_chunk(db, delta.message_id, delta.offset, delta.text)
    return version, _detached(guarded._mapping)


def _detached(values: Any) -> MessageValues:
    # Plain values from the returned row: an ORM object (instrumented, let alone loaded into the
    # session's identity map) costs more than the statement.
    return MessageValues(**{key: values[column] for key, column in _MESSAGE_ATTRS})


async def insert_chunk(db: AsyncSession, message_id: uuid.UUID, start: int, text: str) -> None:
    await db.execute(_INSERT_CHUNK, {"message_id": message_id, "start": start, "text": text})


async def chunk_texts(db: AsyncSession, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The appended deltas of each message, joined in order."""
    if not message_ids:
        return {}
    result = await db.execute(
        select(MessageChunk.message_id, MessageChunk.text)
        .where(MessageChunk.message_id.in_(message_ids))
        .order_by(MessageChunk.message_id, MessageChunk.start)
    )
    parts: dict[uuid.UUID, list[str]] = {}
    for message_id, text in result:
        parts.setdefault(message_id, []).append(text)
    return {message_id: "".join(texts) for message_id, texts in parts.items()}


async def delete_chunks(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(delete(MessageChunk).where(MessageChunk.message_id == message_id))


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


async def delete_message(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(delete(Message).where(Message.id == message_id))


async def flush(db: AsyncSession) -> None:
    await db.flush()
