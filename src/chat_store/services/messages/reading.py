"""Reading messages: the read model, one message, a page of history (from the hot cache)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.errors import ChatSessionNotFound, MessageNotFound
from chat_store.schemas.messages import OPEN_STATUSES, MessageRead
from chat_store.schemas.pagination import Pagination
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import history_cache
from chat_store.services.context import RequestContext
from chat_store.services.history_cache import SerializedPage


def is_stale(status: str, updated_at: datetime, now: datetime, stale_after: timedelta) -> bool:
    """An open message with no change for `stale_after` (STALE_STREAM_SECONDS): its writer
    went silent."""
    return status in OPEN_STATUSES and now - updated_at >= stale_after


async def to_reads(ctx: RequestContext, rows: Sequence[StoredMessage]) -> list[MessageRead]:
    """Read models, with the streamed text of open messages joined from their chunks."""
    rows, chunks = await with_chunks(ctx.db, rows)
    now = datetime.now(UTC)
    return [to_read(ctx, row, chunks.get(row.id), now) for row in rows]


# Rows and their chunks are two statements. Outside one snapshot (Postgres: a GET's autocommit,
# a write's READ COMMITTED) a terminal move or a replaced text committed between them folds or
# deletes chunks the row still counts: such a row is read again, with its chunks.
_TORN_READ_TRIES = 4


async def with_chunks(
    db: AsyncSession, rows: Sequence[StoredMessage]
) -> tuple[list[StoredMessage], dict[uuid.UUID, str]]:
    """`rows` (each read again if it moved under the read), and the chunks' text of the open
    ones, consistent with them (or, past the tries, as last read: rows before their chunks)."""
    rows = list(rows)
    chunks: dict[uuid.UUID, str] = {}
    for attempt in range(_TORN_READ_TRIES):
        open_ids = [row.id for row in rows if row.status in OPEN_STATUSES]
        parts = await message_crud.chunk_parts(db, open_ids)
        chunks = {message_id: text for message_id, (_, text) in parts.items()}
        torn = [row.id for row in rows if _torn(row, parts.get(row.id))]
        if not torn or attempt + 1 == _TORN_READ_TRIES:
            break
        fresh = await message_crud.get_by_ids(db, torn)
        rows = [fresh.get(row.id, row) for row in rows]
    return rows, chunks


def _torn(row: StoredMessage, chunks: tuple[int, str] | None) -> bool:
    """An open row whose chunks, read after it, do not continue its folded prefix (the text was
    replaced, then written to again) or do not reach the length it records (they were folded
    away, or deleted)."""
    if row.status not in OPEN_STATUSES:
        return False
    prefix = len(row.partial_content or "")
    if chunks is None:
        return prefix < row.partial_length
    start, text = chunks
    return start != prefix or prefix + len(text) < row.partial_length


def to_read(
    ctx: RequestContext, row: StoredMessage, chunk_text: str | None, now: datetime
) -> MessageRead:
    """The message as the API shows it; `chunk_text`: its chunks' text when it is open."""
    return MessageRead(**read_fields(ctx, row, chunk_text, now))


# The read model's fields that a stored message holds as they are shown.
_SHOWN_AS_STORED = tuple(
    name
    for name in MessageRead.model_fields
    if name in {field.name for field in dataclasses.fields(StoredMessage)}
)


def read_fields(
    ctx: RequestContext, row: StoredMessage, chunk_text: str | None, now: datetime
) -> dict[str, Any]:
    """The read model's fields: the stored ones, the text streamed so far, whether it is stale."""
    fields = {name: getattr(row, name) for name in _SHOWN_AS_STORED}
    fields["partial_content"] = shown_partial(row, chunk_text)
    fields["metadata"] = row.metadata_
    fields["stale"] = is_stale(row.status, row.updated_at, now, ctx.app.stale_after)
    return fields


async def full_text(db: AsyncSession, row: StoredMessage) -> str:
    """The text of `row`, read under its lock (or where it cannot move meanwhile)."""
    return (await read_text(db, row))[2]


async def read_text(db: AsyncSession, row: StoredMessage) -> tuple[StoredMessage, str | None, str]:
    """The message (read again if it moved under the read, see `with_chunks`), the chunks
    appended since its folded prefix (None for a complete message) and its whole text."""
    if row.status == "complete":
        return row, None, row.content or ""
    [row], found = await with_chunks(db, [row])
    if row.status == "complete":
        return row, None, row.content or ""
    chunks = found.get(row.id)
    return row, chunks, streamed_text(row, chunks) or ""


def shown_partial(row: StoredMessage, chunk_text: str | None) -> str | None:
    """`partial_content` as the API shows it: the text streamed so far, "" for an open message
    with none yet; `chunk_text`: its chunks' text when it is open."""
    partial = streamed_text(row, chunk_text)
    if partial is None and row.status in OPEN_STATUSES:
        return ""
    return partial


def streamed_text(row: StoredMessage, chunk_text: str | None) -> str | None:
    """The text streamed so far: the folded prefix, then the chunks appended since."""
    if chunk_text:
        return (row.partial_content or "") + chunk_text
    return row.partial_content


async def owned_message(
    ctx: RequestContext,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> StoredMessage:
    row = await message_crud.get_for_owner(
        ctx.db, ctx.principal.user_id, session_id, message_id, for_update=for_update
    )
    if row is None:
        # Tell a missing session from a missing message, for the caller's own sessions only.
        await chat_session_service.get_owned(ctx, session_id)
        raise MessageNotFound()
    return row


async def get_message(
    ctx: RequestContext, session_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    row = await owned_message(ctx, session_id, message_id)
    return (await to_reads(ctx, [row]))[0]


async def list_messages(
    ctx: RequestContext,
    session_id: uuid.UUID,
    pagination: Pagination,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> SerializedPage:
    """One page of history (in seq order unless `order=desc`), within the seqs between
    `after_seq` and `before_seq`. The newest pages come from the hot-history cache, as the JSON
    it keeps."""
    db = ctx.db
    state = await message_crud.get_history_state(db, ctx.principal.user_id, session_id)
    if state is not None and state.archived:
        await ctx.restore_archived(session_id)
        state = await message_crud.get_history_state(db, ctx.principal.user_id, session_id)
    if state is None:
        raise ChatSessionNotFound()
    version, last_seq, created_at, _ = state
    limit = pagination.limit
    # `after` continues in list order; `before` is the page just before the cursor in list
    # order, read walking the other way from it and turned around (as crud/pagination does).
    backwards = pagination.before is not None
    walk_descending = pagination.descending("asc") != backwards
    cursor = pagination.after if pagination.after is not None else pagination.before
    if cursor is not None:
        cursor_seq = await _cursor_seq(db, session_id, cursor)
        if walk_descending:
            before_seq = cursor_seq if before_seq is None else min(before_seq, cursor_seq)
        else:
            after_seq = cursor_seq if after_seq is None else max(after_seq, cursor_seq)

    # Only reads near the newest end use (and fill) the cache; old history goes to the database.
    near_tail = after_seq is None or after_seq >= last_seq - history_cache.WINDOW
    if near_tail:
        window = await history_cache.load(ctx.cache, session_id, created_at, version)
        if window is None:
            window = await _build_window(ctx, session_id, version)
            await history_cache.store(ctx.cache, session_id, created_at, window)
        answer = window.page(
            after_seq=after_seq, before_seq=before_seq, descending=walk_descending, limit=limit
        )
        if answer is not None:
            indexes, more = answer
            return window.serialized_page(indexes[::-1] if backwards else indexes, more)

    rows, has_more = await message_crud.list_by_seq(
        db,
        session_id,
        limit,
        after_seq=after_seq,
        before_seq=before_seq,
        descending=walk_descending,
    )
    if backwards:
        rows.reverse()
    reads = await to_reads(ctx, rows)
    return history_cache.SerializedPage(
        [read.model_dump_json() for read in reads], [str(read.id) for read in reads], has_more
    )


async def _cursor_seq(db: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID) -> int:
    seq = await message_crud.get_seq(db, session_id, message_id)
    if seq is None:
        raise MessageNotFound("The cursor message does not exist in this session")
    return seq


async def _build_window(
    ctx: RequestContext, session_id: uuid.UUID, version: int
) -> history_cache.HistoryWindow:
    rows, has_older = await message_crud.list_by_seq(
        ctx.db, session_id, history_cache.WINDOW, descending=True
    )
    rows.reverse()
    reads = await to_reads(ctx, rows)
    # An open message turns stale with time alone: the copy is good until the first one would.
    turns_stale = [
        (read.updated_at + ctx.app.stale_after).timestamp()
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
