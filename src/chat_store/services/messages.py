"""Messages: seq assignment, the status lifecycle, streamed deltas, resume, fork and context."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store import metrics
from chat_store.cache import Cache
from chat_store.cache.bus import Bus
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import messages as message_crud
from chat_store.crud.messages import MessageRow
from chat_store.db import can_autocommit
from chat_store.errors import (
    ChatSessionNotFound,
    InvalidTransition,
    MessageExists,
    MessageNotFound,
    NothingToResume,
    OffsetMismatch,
    PayloadTooLarge,
    SeqConflict,
    ValidationFailed,
)
from chat_store.ids import uuid7
from chat_store.models import ChatSession, Message
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.schemas.common import Page
from chat_store.schemas.messages import (
    OPEN_STATUSES,
    ContextWindow,
    DeltaAppend,
    ForkCreate,
    MessageAppend,
    MessageBatchCreate,
    MessageCreate,
    MessageRead,
    MessageUpdate,
    MessageWithLength,
    ResumePoint,
)
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import events, history_cache, hooks, idempotency
from chat_store.services.principals import Principal
from chat_store.settings import Settings

# Allowed status moves; staying in the same status is not a move.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"in_progress", "complete", "failed", "cancelled"}),
    "in_progress": frozenset({"complete", "failed", "cancelled"}),
    "failed": frozenset({"in_progress"}),
    "complete": frozenset(),
    "cancelled": frozenset(),
}

# Documented token estimate where no token_count is stored: one token per 4 characters
# (the usual rule of thumb for English text with BPE vocabularies), at least 1.
CHARS_PER_TOKEN = 4
_COPY_BATCH = 500


def check_transition(current: str, new: str) -> None:
    if new != current and new not in TRANSITIONS[current]:
        raise InvalidTransition(f"A {current} message cannot become {new}")


def estimate_tokens(text: str | None) -> int:
    return max(1, math.ceil(len(text or "") / CHARS_PER_TOKEN))


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _check_size(settings: Settings, text: str | None, field: str) -> None:
    if text is not None and _utf8_len(text) > settings.max_message_bytes:
        raise PayloadTooLarge(
            f"{field} is over the limit of {settings.max_message_bytes} bytes of UTF-8"
        )


# --- reading

# An open message with no change for this long is reported `stale` (its writer went silent).
# Set from STALE_STREAM_SECONDS when the app starts.
stale_after = timedelta(seconds=300)


def is_stale(status: str, updated_at: datetime, now: datetime) -> bool:
    return status in OPEN_STATUSES and now - updated_at >= stale_after


async def to_reads(db: AsyncSession, rows: Sequence[MessageRow]) -> list[MessageRead]:
    """Read models, with the streamed text of open messages joined from their chunks."""
    open_ids = [row.id for row in rows if row.status in OPEN_STATUSES]
    chunks = await message_crud.chunk_texts(db, open_ids)
    now = datetime.now(UTC)
    return [_to_read(row, chunks.get(row.id), now) for row in rows]


def _to_read(row: MessageRow, chunk_text: str | None, now: datetime) -> MessageRead:
    return MessageRead(**_read_fields(row, chunk_text, now))


def _read_fields(row: MessageRow, chunk_text: str | None, now: datetime) -> dict[str, Any]:
    partial = _streamed_text(row, chunk_text)
    if partial is None and row.status in OPEN_STATUSES:
        partial = ""
    return dict(
        id=row.id,
        session_id=row.session_id,
        seq=row.seq,
        role=row.role,
        content=row.content,
        partial_content=partial,
        status=row.status,
        error_message=row.error_message,
        context=row.context,
        metadata=row.metadata_,
        token_count=row.token_count,
        model=row.model,
        latency_ms=row.latency_ms,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        stale=is_stale(row.status, row.updated_at, now),
    )


async def full_text(db: AsyncSession, row: Message) -> str:
    return (await _chunks_and_text(db, row))[1]


async def _chunks_and_text(db: AsyncSession, row: Message) -> tuple[str | None, str]:
    """The chunks appended since the folded prefix (None for a complete message) and the whole
    text, from one read."""
    if row.status == "complete":
        return None, row.content or ""
    chunks = (await message_crud.chunk_texts(db, [row.id])).get(row.id)
    return chunks, _streamed_text(row, chunks) or ""


def _streamed_text(row: MessageRow, chunk_text: str | None) -> str | None:
    """The text streamed so far: the folded prefix, then the chunks appended since."""
    if chunk_text:
        return (row.partial_content or "") + chunk_text
    return row.partial_content


async def _owned_message(
    db: AsyncSession,
    principal: Principal,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Message:
    row = await message_crud.get_for_owner(
        db, principal.user_id, session_id, message_id, for_update=for_update
    )
    if row is None:
        # Tell a missing session from a missing message, for the caller's own sessions only.
        await chat_session_service.get_owned(db, principal, session_id)
        raise MessageNotFound()
    return row


async def get_message(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    row = await _owned_message(db, principal, session_id, message_id)
    return (await to_reads(db, [row]))[0]


async def list_messages(
    db: AsyncSession,
    cache: Cache,
    principal: Principal,
    session_id: uuid.UUID,
    *,
    limit: int,
    descending: bool,
    after: uuid.UUID | None = None,
    before: uuid.UUID | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> bytes:
    """One page of history as JSON. The newest pages come from the hot-history cache."""
    state = await message_crud.get_history_state(db, principal.user_id, session_id)
    if state is None:
        raise ChatSessionNotFound()
    version, last_seq, created_at = state
    # `after` continues in list order; `before` is the page just before the cursor in list
    # order, read walking the other way from it and turned around (as crud/pagination does).
    backwards = before is not None
    walk_descending = descending != backwards
    cursor = after if after is not None else before
    if cursor is not None:
        cursor_seq = await _cursor_seq(db, session_id, cursor)
        if walk_descending:
            before_seq = cursor_seq if before_seq is None else min(before_seq, cursor_seq)
        else:
            after_seq = cursor_seq if after_seq is None else max(after_seq, cursor_seq)

    # Only reads near the newest end use (and fill) the cache; old history goes to the database.
    near_tail = after_seq is None or after_seq >= last_seq - history_cache.WINDOW
    if near_tail:
        window = await history_cache.load(cache, session_id, created_at, version)
        if window is None:
            window = await _build_window(db, session_id, version)
            await history_cache.store(cache, session_id, created_at, window)
        answer = window.page(
            after_seq=after_seq, before_seq=before_seq, descending=walk_descending, limit=limit
        )
        if answer is not None:
            indexes, more = answer
            return window.render(indexes[::-1] if backwards else indexes, more)

    rows, has_more = await message_crud.list_by_seq(
        db,
        session_id,
        after_seq=after_seq,
        before_seq=before_seq,
        descending=walk_descending,
        limit=limit,
    )
    if backwards:
        rows.reverse()
    reads = await to_reads(db, rows)
    return history_cache.render_page(
        [read.model_dump_json() for read in reads], [str(read.id) for read in reads], has_more
    )


async def _cursor_seq(db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID) -> int:
    seq = await message_crud.get_seq(db, session_id, message_id)
    if seq is None:
        raise MessageNotFound("The cursor message does not exist in this session")
    return seq


async def _build_window(
    db: AsyncSession, session_id: uuid.UUID, version: int
) -> history_cache.HistoryWindow:
    rows, has_older = await message_crud.list_by_seq(
        db,
        session_id,
        after_seq=None,
        before_seq=None,
        descending=True,
        limit=history_cache.WINDOW,
    )
    rows.reverse()
    reads = await to_reads(db, rows)
    # An open message turns stale with time alone: the copy is good until the first one would.
    turns_stale = [
        (read.updated_at + stale_after).timestamp()
        for read in reads
        if read.status in OPEN_STATUSES and not read.stale
    ]
    return history_cache.HistoryWindow(
        version=version,
        fresh_until=min(turns_stale) if turns_stale else None,
        seqs=[read.seq for read in reads],
        ids=[str(read.id) for read in reads],
        documents=[read.model_dump_json() for read in reads],
        reaches_start=not has_older,
    )


# --- appending


async def create_message(
    db: AsyncSession,
    settings: Settings,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    body: MessageAppend,
    idempotency_key: str | None,
) -> MessageRead:
    async def produce() -> MessageRead:
        # A MessageAppend is a MessageCreate (plus expected_last_seq): no second validation.
        created = await _append(
            db, settings, bus, principal, session_id, [body], body.expected_last_seq
        )
        return created[0]

    return await idempotency.run_once(
        db,
        settings,
        user_id=principal.user_id,
        key=idempotency_key,
        operation="create_message",
        scope=str(session_id),
        body=body,
        response_type=MessageRead,
        produce=produce,
    )


async def create_messages(
    db: AsyncSession,
    settings: Settings,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    body: MessageBatchCreate,
    idempotency_key: str | None,
) -> Page[MessageRead]:
    if len(body.messages) > settings.max_batch_messages:
        raise ValidationFailed(
            f"a batch holds at most {settings.max_batch_messages} messages",
            ["body", "messages"],
        )

    async def produce() -> Page[MessageRead]:
        created = await _append(
            db, settings, bus, principal, session_id, body.messages, body.expected_last_seq
        )
        return Page[MessageRead](
            data=created, first_id=created[0].id, last_id=created[-1].id, has_more=False
        )

    return await idempotency.run_once(
        db,
        settings,
        user_id=principal.user_id,
        key=idempotency_key,
        operation="create_messages",
        scope=str(session_id),
        body=body,
        response_type=Page[MessageRead],
        produce=produce,
    )


async def _append(
    db: AsyncSession,
    settings: Settings,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    items: Sequence[MessageCreate],
    expected_last_seq: int | None,
) -> list[MessageRead]:
    """Insert messages with the next seqs: all of them or, on any error, none."""
    for index, item in enumerate(items):
        _check_size(settings, item.content, f"messages[{index}].content")
        _check_size(settings, item.partial_content, f"messages[{index}].partial_content")
    client_ids = [item.id for item in items if item.id is not None]
    if len(set(client_ids)) != len(client_ids):
        raise ValidationFailed("message ids in one batch must differ", ["body", "messages"])
    if client_ids and await message_crud.any_message_id_exists(db, client_ids):
        raise MessageExists("A message with one of these ids already exists")

    now = datetime.now(UTC)
    auto_title = next(
        (
            chat_session_service.title_from_first_message(
                item.content or item.partial_content or ""
            )
            for item in items
            if item.role == "user"
        ),
        None,
    )
    reservation = message_crud.SeqReservation(
        user_id=principal.user_id,
        session_id=session_id,
        count=len(items),
        tokens=sum(item.token_count or 0 for item in items),
        now=now,
        expected_last_seq=expected_last_seq,
        auto_title=auto_title,
    )
    if len(items) == 1 and not client_ids:
        # The common case, one message with a server-chosen id: seq and insert in one statement.
        # seq and versions are placeholders here: the statement takes them from the session.
        row = _new_row(items[0], principal, session_id, 0, now, 0)
        reserved = await message_crud.append_one(
            db, row, reservation, autocommit=can_autocommit(db)
        )
        if reserved is None:
            await _refused_append(db, principal, session_id)
        row.update(seq=reserved[0], created_version=reserved[1], version=reserved[1])
        return _created(db, bus, [_read_from_values(row)], reserved[1])

    reserved = await message_crud.reserve_seqs(db, reservation)
    if reserved is None:
        await _refused_append(db, principal, session_id)

    last_seq, last_version = reserved
    first_seq, first_version = last_seq - len(items) + 1, last_version - len(items) + 1
    rows = [
        _new_row(item, principal, session_id, first_seq + i, now, first_version + i)
        for i, item in enumerate(items)
    ]
    if client_ids:
        try:
            async with db.begin_nested():  # a concurrent insert of the same client id
                await message_crud.insert_messages(db, rows)
        except IntegrityError:
            raise MessageExists("A message with one of these ids already exists") from None
    else:
        await message_crud.insert_messages(db, rows)
    return _created(db, bus, [_read_from_values(row) for row in rows], first_version)


async def _refused_append(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID
) -> NoReturn:
    """The session's row was not updated: it is missing (or not the caller's), or its last seq
    is not the expected one."""
    state = await message_crud.get_history_state(db, principal.user_id, session_id)
    if state is None:
        raise ChatSessionNotFound()
    raise SeqConflict(last_seq=state[1])


def _created(
    db: AsyncSession, bus: Bus, reads: list[MessageRead], first_version: int
) -> list[MessageRead]:
    hooks.after_commit(db, metrics.count_messages(len(reads)))
    for offset, read in enumerate(reads):
        _publish_message(db, bus, "message.created", read, first_version + offset)
    return reads


def _publish_message(
    db: AsyncSession, bus: Bus, kind: str, message: MessageRead, version: int
) -> None:
    events.publish_after_commit(
        db,
        bus,
        message.session_id,
        {"type": kind, "version": version, "message": message.model_dump(mode="json")},
    )


def _new_row(
    item: MessageCreate,
    principal: Principal,
    session_id: uuid.UUID,
    seq: int,
    now: datetime,
    version: int,
) -> dict[str, Any]:
    partial = item.partial_content if item.status != "complete" else None
    if partial is None and item.status in OPEN_STATUSES:
        partial = ""
    return {
        "id": item.id or uuid7(),
        "session_id": session_id,
        "user_id": principal.user_id,
        "seq": seq,
        "role": item.role,
        "content": item.content if item.status == "complete" else None,
        "partial_content": partial,
        "partial_length": len(partial or item.content or ""),
        "partial_bytes": _utf8_len(partial or item.content or ""),
        "status": item.status,
        "error_message": item.error_message,
        "context": item.context,
        "metadata": item.metadata,
        "token_count": item.token_count,
        "model": item.model,
        "latency_ms": item.latency_ms,
        "created_version": version,
        "version": version,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if item.status == "complete" else None,
    }


def _read_from_values(row: dict[str, Any]) -> MessageRead:
    return MessageRead.model_validate(
        {key: value for key, value in row.items() if key in _READ_FIELDS}
    )


_READ_FIELDS = frozenset(MessageRead.model_fields)


# --- streaming


async def append_delta(
    db: AsyncSession,
    settings: Settings,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    body: DeltaAppend,
    *,
    return_text: bool = True,
) -> MessageWithLength:
    """Append one delta at `offset` (code points).

    The success path never reads or rewrites the stored text: a version bump of the session,
    a guarded length update of the message and one chunk insert (one statement on Postgres),
    whatever the answer's length.
    """
    delta = message_crud.Delta(
        user_id=principal.user_id,
        session_id=session_id,
        message_id=message_id,
        offset=body.offset,
        text=body.delta,
        size_bytes=_utf8_len(body.delta),
        max_bytes=settings.max_message_bytes,
        now=datetime.now(UTC),
    )
    # A second try only when the first was refused for no reason the message shows once it is
    # read again: it was committed while the statement waited for the session row, after the
    # snapshot the statement had taken (e.g. created with its own id just before its first
    # delta). A new statement sees it.
    for last_try in (False, True):
        # Without the text in the answer, the delta is one statement that commits by itself
        # (on Postgres). With it, the text is read after the write, and the transaction
        # (holding the session row) keeps a later delta out of what that read sees. A second
        # try runs in the transaction the first refusal's reading began: one connection.
        autocommitted = not return_text and can_autocommit(db)
        appended = await message_crud.append_delta(db, delta, autocommit=autocommitted)
        if appended is None:
            raise ChatSessionNotFound()
        version, row = appended
        if row is not None:
            break
        # The refusal used up a version: tell the change feed, so that its readers see no gap.
        # In a transaction, after commit (dropped with it when the refusal is an error); in
        # autocommit the version is committed already, whatever the answer.
        sync = {"type": "sync", "version": version}
        if autocommitted:
            await events.publish(bus, session_id, sync)
        else:
            events.publish_after_commit(db, bus, session_id, sync)
        unchanged = await _explain_refused_delta(
            db, principal, delta, last_try=last_try, return_text=return_text
        )
        if unchanged is not None:
            return unchanged
    assert row is not None  # the loop breaks with a row, returns or raises
    hooks.after_commit(db, metrics.count_delta)
    events.publish_after_commit(
        db,
        bus,
        session_id,
        {
            "type": "message.delta",
            "version": version,
            "message_id": str(message_id),
            "start": body.offset,
            "delta": body.delta,
            "offset": row.partial_length,
        },
    )
    # The answer's text, when asked for, is read after the write (joined from the chunks; the
    # message is open now).
    chunks = (await message_crud.chunk_texts(db, [row.id])).get(row.id) if return_text else None
    return _with_length(row, chunks, row.partial_length, return_text=return_text)


def _with_length(
    row: MessageRow, chunk_text: str | None, length: int, *, return_text: bool
) -> MessageWithLength:
    fields = _read_fields(row, chunk_text, datetime.now(UTC))
    if not return_text:
        fields["partial_content"] = None
    return MessageWithLength(**fields, length=length)


async def _explain_refused_delta(
    db: AsyncSession,
    principal: Principal,
    delta: message_crud.Delta,
    *,
    last_try: bool,
    return_text: bool,
) -> MessageWithLength | None:
    """Why a delta was refused: the answer for a retry of a stored delta, or the error; None
    when the delta fits the message as it is now (then it may be tried once more).

    The message and its text are read once, and the answer is made of that one reading: after
    an autocommitted delta no lock keeps other writers out between two reads."""
    row = await _owned_message(db, principal, delta.session_id, delta.message_id)
    chunks, text = await _chunks_and_text(db, row)
    length = len(text)
    end = delta.offset + len(delta.text)
    if end <= length and text[delta.offset : end] == delta.text:
        # A retry of a delta that is already stored: nothing changes.
        # (its text as to_reads() reads it: the chunks of open messages only)
        chunk_text = chunks if row.status in OPEN_STATUSES else None
        return _with_length(row, chunk_text, length, return_text=return_text)
    if row.status not in OPEN_STATUSES:
        raise InvalidTransition(
            f"Deltas go to pending or in_progress messages; this one is {row.status}"
        )
    if delta.offset != row.partial_length:
        raise OffsetMismatch(row.partial_length)
    if row.partial_bytes + delta.size_bytes > delta.max_bytes:
        raise PayloadTooLarge(
            f"The message text would be over the limit of {delta.max_bytes} bytes"
        )
    if last_try:
        # Refused twice for no reason the message shows: answered as a lost race.
        raise OffsetMismatch(row.partial_length)
    return None


# --- changing and deleting


async def update_message(
    db: AsyncSession,
    settings: Settings,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    body: MessageUpdate,
) -> MessageRead:
    version = await _lock_session(db, principal, session_id)
    row = await _owned_message(db, principal, session_id, message_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    new_status: str = changes.get("status") or row.status
    check_transition(row.status, new_status)
    now = datetime.now(UTC)

    if "content" in changes and new_status != "complete":
        raise ValidationFailed(
            "content belongs to a complete message: set status to complete with it",
            ["body", "content"],
        )
    if "partial_content" in changes and new_status == "complete":
        raise ValidationFailed(
            "a complete message has no partial_content", ["body", "partial_content"]
        )
    if "error_message" in changes and new_status not in {"failed", "cancelled"}:
        raise ValidationFailed(
            "error_message is only for failed or cancelled messages", ["body", "error_message"]
        )
    _check_size(settings, changes.get("content"), "content")
    _check_size(settings, changes.get("partial_content"), "partial_content")

    if "partial_content" in changes:
        _set_streamed_text(row, changes["partial_content"] or "")
        await message_crud.delete_chunks(db, row.id)
    if new_status == "complete" and row.status != "complete":
        text = changes["content"] if "content" in changes else await full_text(db, row)
        _complete(row, text, now)
        await message_crud.delete_chunks(db, row.id)
    elif new_status == "complete" and "content" in changes:
        _complete(row, changes["content"], row.completed_at or now)
    elif (
        new_status in {"failed", "cancelled"}
        and row.status in OPEN_STATUSES
        and "partial_content" not in changes
    ):
        _set_streamed_text(row, await full_text(db, row))
        await message_crud.delete_chunks(db, row.id)
    if new_status != row.status:
        if new_status == "in_progress":  # a failed answer resumed
            row.error_message = None
        row.status = new_status
    if "error_message" in changes:
        row.error_message = changes["error_message"]

    token_delta = 0
    if "token_count" in changes:
        token_delta = (changes["token_count"] or 0) - (row.token_count or 0)
        row.token_count = changes["token_count"]
    if "metadata" in changes:
        row.metadata_ = changes["metadata"]
    if "latency_ms" in changes:
        row.latency_ms = changes["latency_ms"]
    if token_delta:
        await message_crud.adjust_counters(db, session_id, token_delta=token_delta)
    row.updated_at = now
    row.version = version
    await message_crud.flush(db)
    read = (await to_reads(db, [row]))[0]
    _publish_message(db, bus, "message.updated", read, version)
    return read


async def _lock_session(
    db: AsyncSession,
    principal: Principal,
    session_id: uuid.UUID,
    *,
    count_delta: int = 0,
    token_delta: int = 0,
) -> int:
    """Bump the session's history version (taking its row lock first); 404 if not the caller's."""
    version = await message_crud.bump_session(
        db,
        principal.user_id,
        session_id,
        now=datetime.now(UTC),
        count_delta=count_delta,
        token_delta=token_delta,
    )
    if version is None:
        raise ChatSessionNotFound()
    return version


def _set_streamed_text(row: Message, text: str) -> None:
    row.partial_content = text
    row.partial_length = len(text)
    row.partial_bytes = _utf8_len(text)


def _complete(row: Message, text: str, at: datetime) -> None:
    row.content = text
    row.partial_content = None
    row.partial_length = len(text)
    row.partial_bytes = _utf8_len(text)
    row.completed_at = at


async def delete_message(
    db: AsyncSession,
    bus: Bus,
    principal: Principal,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
) -> None:
    version = await _lock_session(db, principal, session_id)
    row = await _owned_message(db, principal, session_id, message_id, for_update=True)
    await message_crud.delete_message(db, row.id)
    # The change feed's replay reports the deletion from this record.
    await message_crud.add_tombstone(db, session_id, row.id, row.seq, version)
    # last_seq is left alone: a deleted message's seq is never given out again.
    await message_crud.adjust_counters(
        db, session_id, count_delta=-1, token_delta=-(row.token_count or 0)
    )
    await message_crud.reset_last_message_at(db, session_id)
    events.publish_after_commit(
        db,
        bus,
        session_id,
        {"type": "message.deleted", "version": version, "message_id": str(row.id), "seq": row.seq},
    )


# --- resume, fork, context


async def resume(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, history_limit: int
) -> ResumePoint:
    await chat_session_service.get_owned(db, principal, session_id)
    row = await message_crud.newest_resumable(db, session_id)
    if row is None:
        raise NothingToResume("Every assistant message of this session is complete")
    history_rows, _ = await message_crud.list_by_seq(
        db, session_id, after_seq=None, before_seq=row.seq, descending=True, limit=history_limit
    )
    history_rows.reverse()
    reads = await to_reads(db, [*history_rows, row])
    message = reads[-1]
    offset = len(message.partial_content or "")
    return ResumePoint(message=message, offset=offset, history=reads[:-1])


async def fork(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    session_id: uuid.UUID,
    body: ForkCreate,
    idempotency_key: str | None,
) -> ChatSessionRead:
    async def produce() -> ChatSessionRead:
        return await _fork(db, principal, session_id, body.message_id)

    return await idempotency.run_once(
        db,
        settings,
        user_id=principal.user_id,
        key=idempotency_key,
        operation="fork_chat_session",
        scope=str(session_id),
        body=body,
        response_type=ChatSessionRead,
        produce=produce,
    )


async def _fork(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
) -> ChatSessionRead:
    source = await chat_session_service.get_owned(db, principal, session_id)
    last = await _owned_message(db, principal, session_id, message_id)
    now = datetime.now(UTC)
    copy = ChatSession(
        id=uuid7(),
        user_id=principal.user_id,
        title=source.title,
        metadata_={
            **source.metadata_,
            "forked_from": {"session_id": str(source.id), "seq": last.seq},
        },
        workspace_repo=source.workspace_repo,
        workspace_branch=source.workspace_branch,
        workspace_path=source.workspace_path,
        last_activity_at=now,
        created_at=now,
        updated_at=now,
    )
    await chat_session_crud.create(db, copy)
    seq = 0
    tokens = 0
    after_seq: int | None = None
    while True:  # copy in batches: a long session is never held in memory whole
        rows, _ = await message_crud.list_by_seq(
            db,
            session_id,
            after_seq=after_seq,
            before_seq=last.seq + 1,
            descending=False,
            limit=_COPY_BATCH,
        )
        if not rows:
            break
        chunks = await message_crud.chunk_texts(
            db, [row.id for row in rows if row.status in OPEN_STATUSES]
        )
        values = []
        for row in rows:
            seq += 1
            tokens += row.token_count or 0
            values.append(_copied_row(row, copy.id, seq, chunks.get(row.id), now))
        await message_crud.insert_messages(db, values)
        after_seq = rows[-1].seq
    copy.message_count = seq
    copy.last_seq = seq
    copy.history_version = 1
    copy.total_tokens = tokens
    copy.last_message_at = now if seq else None
    await chat_session_crud.flush(db)
    return ChatSessionRead.from_model(copy)


def _copied_row(
    row: MessageRow, session_id: uuid.UUID, seq: int, chunk_text: str | None, now: datetime
) -> dict[str, Any]:
    partial = _streamed_text(row, chunk_text)
    return {
        "id": uuid7(),
        "session_id": session_id,
        "user_id": row.user_id,
        "seq": seq,
        "role": row.role,
        "content": row.content,
        "partial_content": partial,
        "partial_length": row.partial_length,
        "partial_bytes": row.partial_bytes,
        "status": row.status,
        "error_message": row.error_message,
        "context": row.context,
        "metadata": row.metadata_,
        "token_count": row.token_count,
        "model": row.model,
        "latency_ms": row.latency_ms,
        "created_version": 1,
        "version": 1,
        "created_at": row.created_at,
        "updated_at": now,
        "completed_at": row.completed_at,
    }


def message_tokens(message: MessageRead) -> int:
    if message.token_count is not None:
        return message.token_count
    return estimate_tokens(
        message.content if message.content is not None else message.partial_content
    )


def select_context(
    messages: Sequence[MessageRead], max_tokens: int
) -> tuple[list[MessageRead], int]:
    """The newest messages that fit `max_tokens`, oldest first, and their token total.

    Messages are taken in groups: a message with the `tool` messages that follow it (the call
    and its results) is taken whole or not at all, so a tool result never loses its call.
    `messages` is in ascending seq order and ends at the newest message.
    """
    groups: list[list[MessageRead]] = []
    for message in messages:
        if message.role == "tool" and groups:
            groups[-1].append(message)
        else:
            groups.append([message])
    chosen: list[MessageRead] = []
    total = 0
    for group in reversed(groups):
        cost = sum(message_tokens(message) for message in group)
        if total + cost > max_tokens:
            break
        chosen[:0] = group
        total += cost
    return chosen, total


async def context_window(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, max_tokens: int
) -> ContextWindow:
    session = await chat_session_service.get_owned(db, principal, session_id)
    # Read newest first in pages until the budget is certainly exceeded; a group may straddle
    # a page boundary, so one extra group's worth is read before selecting.
    loaded: list[MessageRead] = []
    before_seq: int | None = None
    budget_seen = 0
    while True:
        rows, has_more = await message_crud.list_by_seq(
            db, session_id, after_seq=None, before_seq=before_seq, descending=True, limit=200
        )
        reads = await to_reads(db, rows)
        loaded[:0] = list(reversed(reads))
        budget_seen += sum(message_tokens(message) for message in reads)
        if not has_more or not rows:
            break
        before_seq = rows[-1].seq
        if budget_seen > max_tokens and loaded[0].role != "tool":
            break
    chosen, total = select_context(loaded, max_tokens)
    return ContextWindow(
        data=chosen,
        token_count=total,
        truncated=len(chosen) < session.message_count,
        omitted_count=max(0, session.message_count - len(chosen)),
    )
