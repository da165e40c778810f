"""The lease of the service's own generations (one row per generated assistant message).

Lock order: a transaction that writes a generation's row and its session's (or its message's)
takes the generation rows first, in message_id order, then the session's row, then the
message's. Whatever ends a generation (a completion, a failure, a cancel, a continue's claim)
writes the lease row before its message; a deletion reaches the lease rows through ON DELETE
CASCADE only after the session's or the message's row, so it locks them first (`lock_leases`,
`lock_leases_of_sessions`): in the other order, a deletion and a completion at the same moment
deadlock on Postgres (one of them aborted after deadlock_timeout).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import bindparam, exists, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.db import ByDialect, fetch_one
from chat_store.models import ChatSession, Generation, Message
from chat_store.models.message import OPEN_STATUSES


def session_generating(since: datetime) -> ColumnElement[bool]:
    """An open answer of the session is being generated, or waits for a process to continue it
    (its lease held, or handed over or run out, since `since`): the session and its messages
    must stay where they are (not archived, not deleted as idle; a continue does not move the
    session's activity). A lease that ran out before `since` (a server left without a provider
    for longer than the session's idle period) holds nothing back."""
    return (
        exists()
        .where(
            Generation.session_id == ChatSession.id,
            Generation.lease_expires_at >= since,
            Message.id == Generation.message_id,
            Message.status.in_(OPEN_STATUSES),
        )
        .correlate(ChatSession)
    )


_G = Generation


# Built once (a statement built per call costs its cache key again): the values are passed as
# parameters. ON CONFLICT DO NOTHING: a concurrent insert for the same message is not an error,
# so no SAVEPOINT is needed around it.
_INSERT_GENERATION = ByDialect(
    postgresql=pg_insert(Generation)
    .on_conflict_do_nothing(index_elements=[_G.message_id])
    .returning(_G.message_id),
    sqlite=sqlite_insert(Generation)
    .on_conflict_do_nothing(index_elements=[_G.message_id])
    .returning(_G.message_id),
)


async def insert_generation(db: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a generation unless its message has one; returns whether it was inserted."""
    return await fetch_one(db, _INSERT_GENERATION, values) is not None


async def get(db: AsyncSession, message_id: uuid.UUID) -> Generation | None:
    result = await db.execute(select(Generation).where(Generation.message_id == message_id))
    return result.scalar_one_or_none()


class LeaseHolder(NamedTuple):
    """Who holds a generation's lease: the process, and which of its runs (the attempt)."""

    owner: str
    attempt: int


class LiveGeneration(NamedTuple):
    message_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID


# Open: live, or waiting for a process to continue it (its process died or handed it over at
# shutdown; a sweep takes it over), while its answer is open. (A lease is cleared when its run
# ends; one left over by a run that let go of an answer that ended without it is cleared by
# the next sweep, and does not count meanwhile.)
_OPEN_FOR = (
    select(_G.message_id, _G.session_id, _G.user_id)
    .join(Message, Message.id == _G.message_id)
    .where(
        or_(_G.user_id == bindparam("b_user_id"), _G.session_id == bindparam("b_session_id")),
        _G.lease_expires_at.is_not(None),
        Message.status.in_(OPEN_STATUSES),
    )
)


async def open_for(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> list[LiveGeneration]:
    """The generations that are the user's or the session's and not ended: live, or waiting
    to be taken over, in one read (served by ix_generation_user_id and
    ix_generation_session_id)."""
    params = {"b_user_id": user_id, "b_session_id": session_id}
    return [LiveGeneration(*row) for row in await db.execute(_OPEN_FOR, params)]


async def lock_leases(
    db: AsyncSession,
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Lock the generation rows of a user, of one of its sessions or of one message until
    commit (in message_id order), before a write that reaches them after their session's or
    message's row (a deletion's ON DELETE CASCADE): the lock order of this module's docstring.
    Returns the answers whose lease a process holds (or held when it died), as they stand once
    locked: the ones a process may be generating.

    Every row, not only the held ones: a continue claims a lease nobody holds, and then locks
    the session."""
    query = select(_G.message_id, _G.owner).where(_G.user_id == user_id)
    if session_id is not None:
        query = query.where(_G.session_id == session_id)
    if message_id is not None:
        query = query.where(_G.message_id == message_id)
    rows = await db.execute(query.order_by(_G.message_id).with_for_update())
    return [locked for locked, owner in rows if owner is not None]


async def lock_leases_of_sessions(db: AsyncSession, session_ids: Collection[uuid.UUID]) -> None:
    """Lock the generation rows of `session_ids` until commit (in message_id order), before
    their sessions are deleted: the lock order of this module's docstring."""
    if session_ids:
        await db.execute(
            select(_G.message_id)
            .where(_G.session_id.in_(list(session_ids)))
            .order_by(_G.message_id)
            .with_for_update()
        )


async def claim(
    db: AsyncSession,
    message_id: uuid.UUID,
    *,
    owner: str,
    lease_until: datetime,
    now: datetime,
    params: dict[str, Any] | None = None,
) -> Generation | None:
    """Take the generation for `owner` if no process holds a live lease on it (finished, or
    its process died): one compare-and-set, so two processes never both win. The attempt
    count (the run's number) goes up by one. None when it is live elsewhere, or missing."""
    values: dict[str, Any] = {
        "owner": owner,
        "lease_expires_at": lease_until,
        "attempt": _G.attempt + 1,
        "updated_at": now,
    }
    if params is not None:
        values["params"] = params
    result = await db.execute(
        update(Generation)
        .where(
            _G.message_id == message_id,
            or_(_G.owner.is_(None), _G.lease_expires_at.is_(None), _G.lease_expires_at <= now),
        )
        .values(**values)
        .returning(Generation)
    )
    return result.scalar_one_or_none()


async def renew(
    db: AsyncSession, owner: str, runs: Mapping[uuid.UUID, int], lease_until: datetime
) -> set[uuid.UUID]:
    """Extend the leases `owner`'s runs hold (`runs`: each answer's run, its attempt); returns
    the answers whose lease they still hold (one cancelled, or claimed by another run meanwhile,
    even one of this process, is not among them). The rows are locked in message_id order
    (the lock order of this module's docstring)."""
    if not runs:
        return set()
    held = (
        select(_G.message_id)
        .where(_G.owner == owner, tuple_(_G.message_id, _G.attempt).in_(list(runs.items())))
        .order_by(_G.message_id)
        .with_for_update()
    )
    result = await db.execute(
        update(Generation)
        .where(_G.message_id.in_(held.scalar_subquery()), _G.owner == owner)
        .values(lease_expires_at=lease_until)
        .returning(_G.message_id)
    )
    return set(result.scalars())


# Why a run that still holds its lease ends it without ending the answer: `shutdown`, its
# process stops (it writes what it read first); `superseded`, the answer's text moved under
# it. Only a run that handed over at shutdown is not counted against GENERATION_MAX_ATTEMPTS.
HandOver = Literal["shutdown", "superseded"]


async def release(
    db: AsyncSession,
    message_id: uuid.UUID,
    now: datetime,
    *,
    holder: LeaseHolder | None = None,
    hand_over: HandOver | None = None,
) -> bool:
    """Nobody generates it any more: finished (lease cleared), or with `hand_over` left for
    another process to take over at once (the lease ends now). With `holder`, only the lease of
    that run (its process and attempt) is touched: a run that lost its lease never ends its
    successor's, even one of its own process. Returns whether there was such a lease."""
    stmt = update(Generation).where(_G.message_id == message_id)
    if holder is not None:
        stmt = stmt.where(_G.owner == holder.owner, _G.attempt == holder.attempt)
    values: dict[str, Any] = {
        "owner": None,
        "lease_expires_at": None if hand_over is None else now,
        "updated_at": now,
    }
    if hand_over == "shutdown":
        values["handovers"] = _G.handovers + 1
    result = await db.execute(stmt.values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expired(db: AsyncSession, now: datetime, limit: int) -> list[tuple[uuid.UUID, bool]]:
    """Generations whose lease ran out (served by ix_generation_lease_expires_at), oldest
    first, each with whether its process handed it over (its lease released without an owner)
    rather than stopped renewing it."""
    result = await db.execute(
        select(_G.message_id, _G.owner.is_(None))
        .where(_G.lease_expires_at.is_not(None), _G.lease_expires_at <= now)
        .order_by(_G.lease_expires_at)
        .limit(limit)
    )
    return [(message_id, bool(handed_over)) for message_id, handed_over in result.all()]
