"""Message rows: inserts (with the next seq), reads by id, by seq and by change."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    CompoundSelect,
    Select,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.crud.messages.sequence import SeqReservation, reserve_statement
from chat_store.crud.messages.tables import CHAT_SESSION, MESSAGE, MESSAGE_ATTRS, MESSAGE_TABLE
from chat_store.db import ByDialect, fetch_one
from chat_store.models import ArchivedMessage, Message, MessageTombstone


@dataclass(slots=True)
class StoredMessage:
    """A stored message: its columns as plain values, no ORM state. Every read of messages
    returns this shape, and inserts and changes are written from it.

    Plain values because loading 100 ORM objects into the session (identity map, instrumented
    state) cost more CPU than everything else in an uncached page read, and a SQLAlchemy row's
    attributes are slow to read one by one. The attribute names are the model's (`metadata_`
    for the column "metadata")."""

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
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @classmethod
    def from_columns(cls, values: Mapping[str, Any]) -> StoredMessage:
        """From a row by column name (e.g. what an INSERT or UPDATE returned)."""
        return cls(**{attribute: values[column] for attribute, column in _ATTRIBUTE_COLUMNS})

    def columns(self) -> dict[str, Any]:
        """The values by column name, as an insert or an update takes them."""
        return {column: getattr(self, attribute) for attribute, column in _ATTRIBUTE_COLUMNS}


# (attribute, column) in StoredMessage's order; a field that is no column fails here.
_ATTRIBUTE_COLUMNS = [
    (field.name, dict(MESSAGE_ATTRS)[field.name]) for field in dataclasses.fields(StoredMessage)
]
# The columns to select, in StoredMessage's order: a row is its positional arguments.
_SELECTED = [MESSAGE_TABLE.c[column] for _, column in _ATTRIBUTE_COLUMNS]

_INSERT_MESSAGE = insert(MESSAGE_TABLE)

# The columns a new message takes from the caller; seq and the versions come from the session.
_FROM_SESSION = ("seq", "created_version", "version")
_GIVEN_COLUMNS = [column for column in MESSAGE_TABLE.c if column.name not in _FROM_SESSION]


@functools.cache
def _given_names(index: int) -> tuple[tuple[str, str], ...]:
    """(bind parameter, column) of message `index`'s given values, in _GIVEN_COLUMNS' order:
    made once, not on every append."""
    return tuple((f"m{index}_{column.name}", column.name) for column in _GIVEN_COLUMNS)


def _given_params(messages: Sequence[StoredMessage]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for index, message in enumerate(messages):
        values = message.columns()
        params.update({bind: values[column] for bind, column in _given_names(index)})
    return params


def _new_rows_source(reserved: CTE, count: int) -> Select[Any] | CompoundSelect[Any]:
    """The `count` messages' rows as the insert takes them: their given values, and the seqs
    and versions the session's row reserved, the last message's its newest."""
    rows = [
        select(
            *(
                bindparam(bind, type_=column.type)
                for (bind, _), column in zip(_given_names(index), _GIVEN_COLUMNS, strict=True)
            ),
            *_taken_back(reserved, back),
        )
        for index, back in enumerate(range(count - 1, -1, -1))
    ]
    return rows[0] if count == 1 else union_all(*rows)


def _taken_back(reserved: CTE, back: int) -> list[ColumnElement[Any]]:
    """The seq and the two versions of the message `back` places before the newest reserved
    (the newest's read as they are: no `- 0` in the statement)."""
    seq, version = reserved.c.last_seq, reserved.c.history_version
    if back:
        return [seq - back, version - back, version - back]
    return [seq, version, version]


async def _insert_reserved(
    db: AsyncSession, params: dict[str, Any], count: int, last_seq: int, last_version: int
) -> None:
    """SQLite's second step: the messages inserted with the seqs and versions reserved."""
    inserts = []
    for index, back in enumerate(range(count - 1, -1, -1)):
        row = {column: params[bind] for bind, column in _given_names(index)}
        row.update(
            seq=last_seq - back, created_version=last_version - back, version=last_version - back
        )
        inserts.append(row)
    await db.execute(_INSERT_MESSAGE, inserts[0] if count == 1 else inserts)


@functools.cache
def _append_one(*, expected: bool, titled: bool) -> ByDialect:
    """The session's next seq for one message, and its insert: on Postgres one statement (a
    data-modifying WITH), so the session row is locked from this statement to COMMIT with no
    round trip and no Python work in between; on SQLite the two statements in turn."""
    reserve = reserve_statement(expected=expected, titled=titled)
    in_one = (
        insert(MESSAGE_TABLE)
        .from_select(
            [*(column.name for column in _GIVEN_COLUMNS), *_FROM_SESSION],
            _new_rows_source(reserve.cte("reserved"), 1),
        )
        .returning(MESSAGE.seq, MESSAGE.version)
    )

    async def in_steps(db: AsyncSession, params: dict[str, Any]) -> dict[str, Any] | None:
        taken = (await db.execute(reserve, params)).first()
        if taken is None:
            return None
        seq, version = taken
        await _insert_reserved(db, params, 1, seq, version)
        return {"seq": seq, "version": version}

    return ByDialect(postgresql=in_one, sqlite=in_steps)


async def append_one(
    db: AsyncSession, message: StoredMessage, reservation: SeqReservation, *, standalone: bool
) -> tuple[int, int] | None:
    """Insert `message` with the session's next seq, which also gives its versions (whatever
    `message` holds for them); returns its (seq, version), or None as reserve_seqs does.
    `standalone`: see db.fetch_one."""
    write = _append_one(
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    params = _given_params([message])
    params.update(reservation.params())
    appended = await fetch_one(db, write, params, standalone=standalone)
    return None if appended is None else (appended["seq"], appended["version"])


class Appended(NamedTuple):
    """What an append with the session's system prompt returns."""

    last_seq: int  # the last message's: message i of n has seq last_seq - n + 1 + i
    last_version: int  # likewise its version
    system_prompt: str | None  # the session's


@functools.cache
def _append_rows(*, count: int, expected: bool, titled: bool) -> ByDialect:
    """The session's next `count` seqs, the messages' inserts, and the session's system prompt:
    on Postgres one statement (data-modifying WITHs: the session's row is updated, and so
    locked, first), on SQLite the update and then the inserts."""
    reserve = reserve_statement(expected=expected, titled=titled, prompt=True)
    reserved = reserve.cte("reserved")
    inserted = (
        insert(MESSAGE_TABLE)
        .from_select(
            [*(column.name for column in _GIVEN_COLUMNS), *_FROM_SESSION],
            _new_rows_source(reserved, count),
        )
        .cte("inserted")
    )
    in_one = select(
        reserved.c.last_seq, reserved.c.history_version, reserved.c.system_prompt
    ).add_cte(inserted)

    async def in_steps(db: AsyncSession, params: dict[str, Any]) -> dict[str, Any] | None:
        taken = (await db.execute(reserve, params)).first()
        if taken is None:
            return None
        last_seq, last_version, system_prompt = taken
        await _insert_reserved(db, params, count, last_seq, last_version)
        return {
            "last_seq": last_seq,
            "history_version": last_version,
            "system_prompt": system_prompt,
        }

    return ByDialect(postgresql=in_one, sqlite=in_steps)


async def append_with_prompt(
    db: AsyncSession, messages: Sequence[StoredMessage], reservation: SeqReservation
) -> Appended | None:
    """Insert `messages` (ids of their own, not in the table) with the session's next seqs,
    which also give their versions (whatever they hold for them), in the caller's transaction;
    with the session's system prompt. None as reserve_seqs."""
    write = _append_rows(
        count=len(messages),
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    params = _given_params(messages)
    params.update(reservation.params())
    appended = await fetch_one(db, write, params)
    if appended is None:
        return None
    return Appended(appended["last_seq"], appended["history_version"], appended["system_prompt"])


async def any_message_id_exists(db: AsyncSession, ids: Iterable[uuid.UUID]) -> bool:
    """Whether a message has, or had, one of `ids`: a stored one, a deleted one (its tombstone
    keeps its id: the change feed replays its deletion under that id) or an archived one (only
    in its session's archive object, which the restore puts back under that id). One statement:
    an archive's commit moves an id from `message` to `archived_message` in one transaction, so
    the statement's snapshot finds it in one or the other."""
    wanted = list(ids)
    if not wanted:
        return False
    stored = select(Message.id).where(Message.id.in_(wanted))
    deleted = select(MessageTombstone.message_id).where(MessageTombstone.message_id.in_(wanted))
    archived = select(ArchivedMessage.message_id).where(ArchivedMessage.message_id.in_(wanted))
    result = await db.execute(union_all(stored, deleted, archived).limit(1))
    return result.first() is not None


# Rows per executemany (an import's or a restore's many messages): well under the drivers'
# parameter limits.
INSERT_BATCH = 1000


async def insert_messages(db: AsyncSession, messages: Sequence[StoredMessage]) -> None:
    """A Core insert (no ORM unit of work) on the hot append path."""
    rows = [message.columns() for message in messages]
    if len(rows) == 1:
        # The common case: a plain INSERT, not the executemany path.
        await db.execute(_INSERT_MESSAGE, rows[0])
        return
    for start in range(0, len(rows), INSERT_BATCH):
        await db.execute(_INSERT_MESSAGE, rows[start : start + INSERT_BATCH])


async def update_message(db: AsyncSession, message: StoredMessage) -> None:
    """Write `message`'s values to its row (a change the caller made under the row's lock)."""
    values = message.columns()
    del values["id"]
    await db.execute(update(MESSAGE_TABLE).where(MESSAGE.id == message.id).values(values))


async def get_for_owner(
    db: AsyncSession,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> StoredMessage | None:
    stmt = select(*_SELECTED).where(
        MESSAGE.id == message_id, MESSAGE.session_id == session_id, MESSAGE.user_id == user_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = (await db.execute(stmt)).first()
    return None if row is None else StoredMessage(*row)


async def get_by_ids(
    db: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, StoredMessage]:
    """The messages of `message_ids` that exist, by id (rows read again: the caller read them
    before, by a query that already filtered by owner)."""
    if not message_ids:
        return {}
    result = await db.execute(select(*_SELECTED).where(MESSAGE.id.in_(message_ids)))
    return {row.id: row for row in (StoredMessage(*values) for values in result)}


async def get_seq(db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID) -> int | None:
    """The message's seq; a deleted one's from its tombstone (a page's cursor may name a
    message deleted since the page was read)."""
    result = await db.execute(
        select(Message.seq).where(Message.id == message_id, Message.session_id == session_id)
    )
    seq = result.scalar_one_or_none()
    if seq is None:
        result = await db.execute(
            select(MessageTombstone.seq).where(
                MessageTombstone.message_id == message_id,
                MessageTombstone.session_id == session_id,
            )
        )
        seq = result.scalar_one_or_none()
    return seq


async def list_by_seq(
    db: AsyncSession,
    session_id: uuid.UUID,
    limit: int,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    descending: bool = False,
) -> tuple[list[StoredMessage], bool]:
    """One page in seq order between the seqs given, and whether more follow. Served by
    uq_message_session_id_seq: a range scan of `limit` rows wherever the page lies, so the last
    page of a huge session costs what a small one does."""
    stmt = select(*_SELECTED).where(MESSAGE.session_id == session_id)
    if after_seq is not None:
        stmt = stmt.where(MESSAGE.seq > after_seq)
    if before_seq is not None:
        stmt = stmt.where(MESSAGE.seq < before_seq)
    order = MESSAGE.seq.desc() if descending else MESSAGE.seq.asc()
    result = await db.execute(stmt.order_by(order).limit(limit + 1))
    rows = [StoredMessage(*row) for row in result]
    return rows[:limit], len(rows) > limit


async def changed_since(
    db: AsyncSession,
    session_id: uuid.UUID,
    cursor: tuple[int, int],
    limit: int | None,
    *,
    only_version: int | None = None,
) -> list[StoredMessage]:
    """Messages changed after the (version, seq) cursor, in change order (the change feed's
    replay); with `only_version`, those of that version only. A batch append gave several
    messages one version, so seq breaks the tie."""
    query = select(*_SELECTED).where(
        MESSAGE.session_id == session_id, tuple_(MESSAGE.version, MESSAGE.seq) > tuple_(*cursor)
    )
    if only_version is not None:
        query = query.where(MESSAGE.version == only_version)
    result = await db.execute(query.order_by(MESSAGE.version, MESSAGE.seq).limit(limit))
    return [StoredMessage(*row) for row in result]


async def open_in_session(db: AsyncSession, session_id: uuid.UUID) -> list[StoredMessage]:
    """The session's pending and in-progress messages, in seq order, read through the
    (session_id, seq) index: a change feed runs it when it opens and when an open message may
    have turned stale, not for every change."""
    result = await db.execute(
        select(*_SELECTED)
        .where(MESSAGE.session_id == session_id, MESSAGE.status.in_(("pending", "in_progress")))
        .order_by(MESSAGE.seq)
    )
    return [StoredMessage(*row) for row in result]


async def newest_resumable(db: AsyncSession, session_id: uuid.UUID) -> StoredMessage | None:
    row = (
        await db.execute(
            select(*_SELECTED)
            .where(
                MESSAGE.session_id == session_id,
                MESSAGE.role == "assistant",
                MESSAGE.status.in_(("pending", "in_progress", "failed")),
            )
            .order_by(MESSAGE.seq.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else StoredMessage(*row)


async def delete_message(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(delete(Message).where(Message.id == message_id))


async def flush(db: AsyncSession) -> None:
    await db.flush()


async def recent_tool_calls(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, window: int
) -> list[list[dict[str, Any]]]:
    """The tool calls of the assistant messages among the session's last `window` seqs (a
    range of uq_message_session_id_seq, however long the session), newest first."""
    last_seq = (
        select(CHAT_SESSION.last_seq)
        .where(CHAT_SESSION.id == session_id, CHAT_SESSION.user_id == user_id)
        .scalar_subquery()
    )
    result = await db.execute(
        select(MESSAGE.tool_calls)
        .where(
            MESSAGE.session_id == session_id,
            MESSAGE.seq > last_seq - window,
            MESSAGE.role == "assistant",
            MESSAGE.tool_calls.is_not(None),
        )
        .order_by(MESSAGE.seq.desc())
    )
    return [calls for calls in result.scalars() if calls]
