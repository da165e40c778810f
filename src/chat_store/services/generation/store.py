"""The generation's one way into the message store: every read and write of messages, sessions
and leases that chat turns make goes through this module, and only through the messages
service's public functions (so deltas, status moves, counters, cache versions and change events
are exactly those of a client-written answer) and the generations crud module.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import generations as generation_crud
from chat_store.crud.generations import LeaseHolder
from chat_store.schemas.messages import (
    OPEN_STATUSES,
    DeltaAppend,
    MessageAppend,
    MessageRead,
    MessageUpdate,
)
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import hooks
from chat_store.services import messages as message_service
from chat_store.services.context import RequestContext
from chat_store.services.principals import Principal

# The store's token estimate and its /context selection, so a prompt is cut as /context cuts.
estimate_tokens = message_service.estimate_tokens
message_tokens = message_service.message_tokens
select_context = message_service.select_context
get_message = message_service.get_message

# The leases, as the generations crud module keeps them.
get_generation = generation_crud.get
open_for = generation_crud.open_for
claim = generation_crud.claim
renew = generation_crud.renew
release = generation_crud.release
expired = generation_crud.expired


def owner_principal(user_id: uuid.UUID) -> Principal:
    """The owner of a generation, for the writes its process makes on the owner's behalf."""
    return Principal(user_id=user_id, kind="user")


async def begin(db: AsyncSession) -> None:
    """Make what the caller runs next one transaction. Without it, a first write that is one
    statement would commit by itself (see db.fetch_one)."""
    if not db.in_transaction():
        await db.begin()


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A short transaction of a background generation, run as a request's is: committed at the
    end (rolled back on error), then its after-commit work (change events) done. (On SQLite it
    holds the file's write lock from its start: db.SQLITE_BEGIN.)"""
    async with sessionmaker() as db:
        try:
            yield db
        except BaseException:
            hooks.discard(db)
            await db.rollback()
            raise
        if db.in_transaction():
            await db.commit()
        await hooks.run_after_commit(db)


@dataclass(frozen=True)
class NewTurn:
    content: str | None  # None: the answer only, to the stored history
    context: dict[str, Any] | None
    model: str
    expected_last_seq: int | None


async def system_prompt(ctx: RequestContext, session_id: uuid.UUID) -> str | None:
    """The session's system prompt; 404 if the session is not the caller's."""
    chat_session = await chat_session_service.get_owned(ctx, session_id)
    return chat_session.system_prompt


async def lock_session(ctx: RequestContext, session_id: uuid.UUID) -> None:
    """Lock the session's row until commit; 404 if the session is not the caller's."""
    await chat_session_service.get_owned(ctx, session_id, for_update=True)


@dataclass(frozen=True)
class StoredTurn:
    user: MessageRead | None  # None: a turn without content
    answer: MessageRead
    system_prompt: str | None  # the session's, read by the same statement


async def create_turn(ctx: RequestContext, session_id: uuid.UUID, turn: NewTurn) -> StoredTurn:
    """The user's message (complete, with its context) unless the turn has no content, and the
    answer (pending), with the next seqs, in the caller's transaction (one statement on
    Postgres); with the session's system prompt."""
    pending = MessageAppend(role="assistant", status="pending", model=turn.model)
    items = [pending]
    if turn.content is not None:
        asked = MessageAppend(role="user", content=turn.content, context=turn.context)
        items.insert(0, asked)
    created, prompt = await message_service.append_with_prompt(
        ctx, session_id, items, turn.expected_last_seq
    )
    user = created[0] if len(created) == 2 else None
    return StoredTurn(user, created[-1], prompt)


async def add_generation(
    db: AsyncSession,
    message: MessageRead,
    principal: Principal,
    *,
    owner: str,
    lease_until: datetime,
    params: dict[str, Any],
    now: datetime,
) -> bool:
    """Record a new generation held by `owner`; False when the message has one already
    (inserted concurrently). One statement, no SAVEPOINT: the insert does nothing then."""
    values = {
        "message_id": message.id,
        "session_id": message.session_id,
        "user_id": principal.user_id,
        "owner": owner,
        "lease_expires_at": lease_until,
        "attempt": 1,
        "params": params,
        "created_at": now,
        "updated_at": now,
    }
    return await generation_crud.insert_generation(db, values)


@dataclass(frozen=True)
class PromptSource:
    """What a prompt is made of, read at one point in time."""

    system_prompt: str | None  # the session's
    history: list[MessageRead]  # before the turn, oldest first, at least the budget's worth
    turn: list[MessageRead]  # the newest user message before the answer, and what follows it
    answer: MessageRead  # the answer being generated, its stored text in partial_content

    def before_answer(self) -> list[MessageRead]:
        """The messages read before the answer, oldest first."""
        return [*self.history, *self.turn]


async def prompt_source(
    ctx: RequestContext, session_id: uuid.UUID, message_id: uuid.UUID, max_tokens: int
) -> PromptSource:
    """The answer and the messages before it, as `answer_prompt_source` reads them."""
    prompt = await system_prompt(ctx, session_id)
    answer = await get_message(ctx, session_id, message_id)
    return await _read_before(ctx, prompt, answer, max_tokens)


async def answer_prompt_source(
    ctx: RequestContext, answer: MessageRead, prompt: str | None, max_tokens: int
) -> PromptSource:
    """What the prompt of `answer` (as the caller holds it) is made of: the session's system
    prompt (`prompt`, as the caller read it), and the messages before the answer read newest
    first, page by page, until the history certainly holds more than `max_tokens` (and a tool
    result's call is included)."""
    return await _read_before(ctx, prompt, answer, max_tokens)


async def _read_before(
    ctx: RequestContext, prompt: str | None, answer: MessageRead, max_tokens: int
) -> PromptSource:
    before = await message_service.newest_history(
        ctx, answer.session_id, max_tokens, before_seq=answer.seq, with_user_message=True
    )
    start = next((i for i in range(len(before) - 1, -1, -1) if before[i].role == "user"), None)
    if start is None:
        return PromptSource(prompt, before, [], answer)
    return PromptSource(prompt, before[:start], before[start:], answer)


async def append(
    ctx: RequestContext, answer: MessageRead, text: str, offset: int, lease: LeaseHolder
) -> int:
    """Append `text` at `offset` through the durable delta path (one statement committed by
    itself on Postgres, as a streaming client's delta), if `lease` still holds the answer
    (else OffsetMismatch, as for a lost race); returns the new length."""
    delta = DeltaAppend(delta=text, offset=offset)
    appended = await message_service.append_delta(
        ctx, answer.session_id, answer.id, delta, return_text=False, lease=lease
    )
    return appended.length


async def update(ctx: RequestContext, message: MessageRead, change: MessageUpdate) -> MessageRead:
    """A generation's change of its answer: the metadata it sets is the stored one with the
    service's keys added, which the client's metadata limit does not refuse."""
    return await message_service.update_message(
        ctx, message.session_id, message.id, change, metadata_by_service=True
    )


def is_open(message: MessageRead) -> bool:
    return message.status in OPEN_STATUSES
