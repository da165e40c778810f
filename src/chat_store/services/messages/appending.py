"""Appending messages: the next seqs, one message or a batch, all or none."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

from sqlalchemy.exc import IntegrityError

from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.errors import ChatSessionNotFound, MessageExists, SeqConflict, ValidationFailed
from chat_store.ids import uuid7
from chat_store.schemas.common import Page
from chat_store.schemas.messages import (
    OPEN_STATUSES,
    MessageAppend,
    MessageBatchCreate,
    MessageCreate,
    MessageRead,
)
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import events, hooks, idempotency, limits
from chat_store.services.context import RequestContext
from chat_store.services.messages import tools
from chat_store.services.messages.reading import to_read
from chat_store.services.messages.rules import utf8_len
from chat_store.services.messages.tools import SessionArchived
from chat_store.services.principals import Principal


async def create_message(
    ctx: RequestContext, session_id: uuid.UUID, body: MessageAppend, idempotency_key: str | None
) -> MessageRead:
    _check_limits(ctx, body, ["body"])

    async def produce() -> MessageRead:
        # A MessageAppend is a MessageCreate (plus expected_last_seq): no second validation.
        return (await _append(ctx, session_id, [body], body.expected_last_seq, batch=False))[0]

    creating = idempotency.Create("create_message", str(session_id), body, MessageRead)
    return await idempotency.run_once(ctx, idempotency_key, creating, produce)


async def create_messages(
    ctx: RequestContext,
    session_id: uuid.UUID,
    body: MessageBatchCreate,
    idempotency_key: str | None,
) -> Page[MessageRead]:
    for index, item in enumerate(body.messages):
        _check_limits(ctx, item, ["body", "messages", index])
    most = ctx.settings.max_batch_messages
    if len(body.messages) > most:
        raise ValidationFailed(f"a batch holds at most {most} messages", ["body", "messages"])

    async def produce() -> Page[MessageRead]:
        created = await _append(ctx, session_id, body.messages, body.expected_last_seq, batch=True)
        return Page[MessageRead].of(created, has_more=False)

    creating = idempotency.Create("create_messages", str(session_id), body, Page[MessageRead])
    return await idempotency.run_once(ctx, idempotency_key, creating, produce)


_Appended = TypeVar("_Appended")

# Ids are never reused: the change feed replays a deleted message's deletion under its id.
ID_TAKEN = "A message with one of these ids exists, or existed and was deleted"


async def _append(
    ctx: RequestContext,
    session_id: uuid.UUID,
    items: Sequence[MessageCreate],
    expected_last_seq: int | None,
    *,
    batch: bool,
) -> list[MessageRead]:
    """Insert messages with the next seqs: all of them or, on any error, none."""
    return await _restoring(
        ctx,
        session_id,
        lambda: _append_to_live(ctx, session_id, items, expected_last_seq, batch=batch),
    )


async def _restoring(
    ctx: RequestContext, session_id: uuid.UUID, append: Callable[[], Awaitable[_Appended]]
) -> _Appended:
    """`append`, after restoring the session first if it is archived (found by the append's
    refusal, or by a tool result whose call is not among the live messages: a live session
    costs nothing more)."""
    try:
        return await append()
    except SessionArchived:
        await ctx.restore_archived(session_id)
        return await append()


async def _append_to_live(
    ctx: RequestContext,
    session_id: uuid.UUID,
    items: Sequence[MessageCreate],
    expected_last_seq: int | None,
    *,
    batch: bool,
) -> list[MessageRead]:
    db, principal = ctx.db, ctx.principal
    client_ids = await _check_items(ctx, session_id, items, batch=batch)
    now = datetime.now(UTC)
    reservation = _reservation(ctx, session_id, items, expected_last_seq, now)
    if len(items) == 1 and not client_ids:
        # The common case, one message with a server-chosen id: seq and insert in one statement.
        # seq and versions are placeholders here: the statement takes them from the session.
        message = _new_message(items[0], principal, session_id, 0, now, 0)
        reserved = await message_crud.append_one(db, message, reservation, standalone=True)
        if reserved is None:
            await _refused_append(ctx, session_id)
        message.seq, message.version = reserved
        message.created_version = message.version
        return _announce_created(ctx, [message], now)

    reserved = await message_crud.reserve_seqs(db, reservation)
    if reserved is None:
        await _refused_append(ctx, session_id)

    last_seq, last_version = reserved
    first_seq, first_version = last_seq - len(items) + 1, last_version - len(items) + 1
    messages = [
        _new_message(item, principal, session_id, first_seq + i, now, first_version + i)
        for i, item in enumerate(items)
    ]
    if client_ids:
        try:
            async with db.begin_nested():  # a concurrent insert of the same client id
                await message_crud.insert_messages(db, messages)
        except IntegrityError:
            raise MessageExists(ID_TAKEN) from None
    else:
        await message_crud.insert_messages(db, messages)
    return _announce_created(ctx, messages, now)


async def _check_items(
    ctx: RequestContext, session_id: uuid.UUID, items: Sequence[MessageCreate], *, batch: bool
) -> list[uuid.UUID]:
    """What an append checks before it writes; returns the ids the client chose. A field is
    named as the request names it: `messages[i].content` in a batch, `content` alone."""
    for index, item in enumerate(items):
        where = f"messages[{index}]." if batch else ""
        limits.check_text(ctx.settings, item.content, f"{where}content")
        limits.check_text(ctx.settings, item.partial_content, f"{where}partial_content")
        tools.check_sizes(ctx, item.tool_calls, f"{where}tool_calls")
    client_ids = [item.id for item in items if item.id is not None]
    if len(set(client_ids)) != len(client_ids):
        raise ValidationFailed("message ids in one batch must differ", ["body", "messages"])
    if client_ids and await message_crud.any_message_id_exists(ctx.db, client_ids):
        raise MessageExists(ID_TAKEN)
    await tools.check_answers(ctx, session_id, items, batch=batch)
    return client_ids


def _reservation(
    ctx: RequestContext,
    session_id: uuid.UUID,
    items: Sequence[MessageCreate],
    expected_last_seq: int | None,
    now: datetime,
) -> message_crud.SeqReservation:
    auto_title = chat_session_service.title_from_user_texts(
        item.content or item.partial_content or "" for item in items if item.role == "user"
    )
    return message_crud.SeqReservation(
        user_id=ctx.principal.user_id,
        session_id=session_id,
        count=len(items),
        tokens=sum(item.token_count or 0 for item in items),
        now=now,
        expected_last_seq=expected_last_seq,
        auto_title=auto_title,
    )


async def append_with_prompt(
    ctx: RequestContext,
    session_id: uuid.UUID,
    items: Sequence[MessageAppend],
    expected_last_seq: int | None,
) -> tuple[list[MessageRead], str | None]:
    """Append messages with server-chosen ids as `create_message` appends each (the same checks,
    seqs, versions, counters and events), in the caller's transaction and, on Postgres, in one
    statement; with the session's system prompt, read by that statement."""
    for item in items:
        _check_limits(ctx, item, ["body"])
    if any(item.id is not None for item in items):
        raise ValueError("append_with_prompt appends messages with server-chosen ids only")
    return await _restoring(
        ctx, session_id, lambda: _append_with_prompt(ctx, session_id, items, expected_last_seq)
    )


async def _append_with_prompt(
    ctx: RequestContext,
    session_id: uuid.UUID,
    items: Sequence[MessageCreate],
    expected_last_seq: int | None,
) -> tuple[list[MessageRead], str | None]:
    await _check_items(ctx, session_id, items, batch=False)
    now = datetime.now(UTC)
    reservation = _reservation(ctx, session_id, items, expected_last_seq, now)
    # seq and versions are placeholders here: the statement takes them from the session.
    messages = [_new_message(item, ctx.principal, session_id, 0, now, 0) for item in items]
    appended = await message_crud.append_with_prompt(ctx.db, messages, reservation)
    if appended is None:
        await _refused_append(ctx, session_id)
    first = len(messages) - 1
    for index, message in enumerate(messages):
        message.seq = appended.last_seq - first + index
        message.version = message.created_version = appended.last_version - first + index
    return _announce_created(ctx, messages, now), appended.system_prompt


def _check_limits(ctx: RequestContext, item: MessageCreate, at: list[str | int]) -> None:
    limits.check_context(ctx.settings, item.context, [*at, "context"])
    limits.check_metadata(ctx.settings, item.metadata, [*at, "metadata"])


async def _refused_append(ctx: RequestContext, session_id: uuid.UUID) -> NoReturn:
    """The session's row was not updated: it is missing (or not the caller's), archived, or its
    last seq is not the expected one."""
    state = await message_crud.get_history_state(ctx.db, ctx.principal.user_id, session_id)
    if state is None:
        raise ChatSessionNotFound()
    if state.archived:
        raise SessionArchived()
    raise SeqConflict(last_seq=state.last_seq)


def _announce_created(
    ctx: RequestContext, messages: list[StoredMessage], now: datetime
) -> list[MessageRead]:
    """The new messages' answers; once committed, they are counted and published."""
    reads = [to_read(ctx, message, None, now) for message in messages]
    hooks.after_commit(ctx.db, ctx.app.counters.count_messages(len(reads)))
    for message, read in zip(messages, reads, strict=True):
        event = events.MessageCreated(message.version, read.model_dump(mode="json"))
        events.publish_after_commit(ctx.db, ctx.bus, read.session_id, event)
    return reads


def _new_message(
    item: MessageCreate,
    principal: Principal,
    session_id: uuid.UUID,
    seq: int,
    now: datetime,
    version: int,
) -> StoredMessage:
    partial = item.partial_content if item.status != "complete" else None
    if partial is None and item.status in OPEN_STATUSES:
        partial = ""
    complete = item.status == "complete"
    text = partial or item.content or ""
    return StoredMessage(
        **{name: getattr(item, name) for name in _AS_GIVEN},
        id=item.id or uuid7(),
        session_id=session_id,
        user_id=principal.user_id,
        seq=seq,
        content=item.content if complete else None,
        partial_content=partial,
        partial_length=len(text),
        partial_bytes=utf8_len(text),
        metadata_=item.metadata,
        tool_calls=tools.stored_calls(item.tool_calls),
        tool_call_id=item.tool_call_id,
        created_version=version,
        version=version,
        created_at=now,
        updated_at=now,
        completed_at=now if complete else None,
    )


# What a new message stores as the request gives it.
_AS_GIVEN = ("role", "status", "error_message", "context", "token_count", "model", "latency_ms")
