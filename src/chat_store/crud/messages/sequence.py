"""The session row: the seqs it gives out, its counters and its history version."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from chat_store.crud.messages.tables import CHAT_SESSION, CHAT_SESSION_TABLE
from chat_store.models import ChatSession, Message

# Every write to a session's history goes through its row: an archived session's (its messages
# in the object store) is refused there, so nothing is written beside an archive; the caller
# restores it and tries again (services/messages).
_NOT_ARCHIVED = CHAT_SESSION.archived_at.is_(None)


@functools.cache
def reserve_statement(*, expected: bool, titled: bool, prompt: bool = False) -> Update:
    """The session's next seqs taken; returns the new last seq and history version, and with
    `prompt` the session's system prompt."""
    values: dict[str, Any] = {
        "last_seq": CHAT_SESSION.last_seq + bindparam("b_count"),
        "message_count": CHAT_SESSION.message_count + bindparam("b_count"),
        "total_tokens": CHAT_SESSION.total_tokens + bindparam("b_tokens"),
        # One version per message: the change feed tells each of them apart.
        "history_version": CHAT_SESSION.history_version + bindparam("b_count"),
        "last_message_at": bindparam("b_now"),
        "last_activity_at": bindparam("b_now"),
        "updated_at": bindparam("b_now"),
    }
    if titled:
        values["title"] = func.coalesce(CHAT_SESSION.title, bindparam("b_title", type_=String))
    stmt = update(CHAT_SESSION_TABLE).where(
        CHAT_SESSION.id == bindparam("b_session_id"),
        CHAT_SESSION.user_id == bindparam("b_user_id"),
        _NOT_ARCHIVED,
    )
    if expected:
        stmt = stmt.where(CHAT_SESSION.last_seq == bindparam("b_expected_last_seq"))
    returned = [CHAT_SESSION.last_seq, CHAT_SESSION.history_version]
    if prompt:
        returned.append(CHAT_SESSION.system_prompt)
    return stmt.values(**values).returning(*returned)


@functools.cache
def bump_statement(*, counts: bool, touch: bool) -> Update:
    values: dict[str, Any] = {"history_version": CHAT_SESSION.history_version + 1}
    if counts:
        values["message_count"] = CHAT_SESSION.message_count + bindparam("b_count_delta")
        values["total_tokens"] = CHAT_SESSION.total_tokens + bindparam("b_token_delta")
    if touch:
        values["updated_at"] = bindparam("b_now")
    return (
        update(CHAT_SESSION_TABLE)
        .where(
            CHAT_SESSION.id == bindparam("b_session_id"),
            CHAT_SESSION.user_id == bindparam("b_user_id"),
            _NOT_ARCHIVED,
        )
        .values(**values)
        .returning(CHAT_SESSION.history_version)
    )


_HISTORY_STATE = select(
    CHAT_SESSION.history_version,
    CHAT_SESSION.last_seq,
    CHAT_SESSION.created_at,
    CHAT_SESSION.archived_at.is_not(None),
).where(
    CHAT_SESSION.id == bindparam("b_session_id"),
    CHAT_SESSION.user_id == bindparam("b_user_id"),
)


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
    stmt = reserve_statement(
        expected=reservation.expected_last_seq is not None,
        titled=reservation.auto_title is not None,
    )
    result = await db.execute(stmt, reservation.params())
    row = result.one_or_none()
    return (row[0], row[1]) if row is not None else None


class HistoryState(NamedTuple):
    version: int
    last_seq: int
    created_at: datetime
    # Its messages are in the object store, not in the database.
    archived: bool


async def get_history_state(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> HistoryState | None:
    """The caller's session's history state, or None: one primary-key read."""
    result = await db.execute(_HISTORY_STATE, {"b_session_id": session_id, "b_user_id": user_id})
    row = result.one_or_none()
    return HistoryState(row[0], row[1], row[2], bool(row[3])) if row is not None else None


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


async def bump_history_version(
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
    result = await db.execute(bump_statement(counts=counts, touch=touch), params)
    return result.scalar_one_or_none()


async def reset_last_message_at(db: AsyncSession, session_id: uuid.UUID) -> None:
    """After a deletion: last_message_at is the newest remaining message's (null when none).
    Run under the session row lock (bump_history_version): a concurrent append's time is kept."""
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
