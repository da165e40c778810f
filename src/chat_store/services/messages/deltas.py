"""Streaming an answer into a message, delta by delta, at a checked offset."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chat_store.crud import messages as message_crud
from chat_store.crud.generations import LeaseHolder
from chat_store.crud.messages import StoredMessage
from chat_store.errors import (
    ChatSessionNotFound,
    InvalidTransition,
    OffsetMismatch,
    PayloadTooLarge,
)
from chat_store.schemas.messages import OPEN_STATUSES, DeltaAppend, MessageWithLength
from chat_store.services import events, hooks
from chat_store.services.context import RequestContext
from chat_store.services.messages.reading import owned_message, read_fields, read_text
from chat_store.services.messages.rules import utf8_len


async def append_delta(
    ctx: RequestContext,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    body: DeltaAppend,
    *,
    return_text: bool = True,
    lease: LeaseHolder | None = None,
) -> MessageWithLength:
    """Append one delta at `offset` (code points); a generation's write (`lease`) only while
    that run holds the answer's lease (refused as a lost race otherwise).

    The success path never reads or rewrites the stored text: a version bump of the session,
    a guarded length update of the message and one chunk insert (one statement on Postgres),
    whatever the answer's length.
    """
    db = ctx.db
    delta = message_crud.Delta(
        user_id=ctx.principal.user_id,
        session_id=session_id,
        message_id=message_id,
        offset=body.offset,
        text=body.delta,
        size_bytes=utf8_len(body.delta),
        max_bytes=ctx.settings.max_message_bytes,
        now=datetime.now(UTC),
        lease=lease,
    )
    # A second try only when the first was refused for no reason the message shows once it is
    # read again: it was committed while the statement waited for the session row, after the
    # snapshot the statement had taken (e.g. created with its own id just before its first
    # delta). A new statement sees it.
    for last_try in (False, True):
        # Without the text in the answer, the delta stands alone (it may commit by itself).
        # With it, the text is read after the write, and the transaction (holding the session
        # row) keeps a later delta out of what that read sees. A second try runs in the
        # transaction the first refusal's reading began: one connection.
        appended = await message_crud.append_delta(db, delta, standalone=not return_text)
        if appended is None:
            # The session's row refused it: missing, not the caller's, or archived (then
            # restored, and the delta tried again).
            state = await message_crud.get_history_state(db, ctx.principal.user_id, session_id)
            if state is None or not state.archived:
                raise ChatSessionNotFound()
            await ctx.restore_archived(session_id)
            appended = await message_crud.append_delta(db, delta, standalone=False)
            if appended is None:
                raise ChatSessionNotFound()
        version, row = appended
        if row is not None:
            break
        # The refusal used up a version: tell the change feed, so that its readers see no gap,
        # once the version is committed (dropped with the transaction when the refusal is an
        # error; at once when the delta committed by itself, whatever the answer).
        used = events.VersionUsed(version)
        await events.publish_when_committed(db, ctx.bus, session_id, used)
        unchanged = await _explain_refused_delta(
            ctx, delta, last_try=last_try, return_text=return_text
        )
        if unchanged is not None:
            return unchanged
    assert row is not None  # the loop breaks with a row, returns or raises
    hooks.after_commit(db, ctx.app.counters.count_delta)
    streamed = events.MessageDelta(
        version,
        message_id=str(message_id),
        start=body.offset,
        delta=body.delta,
        offset=row.partial_length,
    )
    events.publish_after_commit(db, ctx.bus, session_id, streamed)
    # The answer's text, when asked for, is read after the write (joined from the chunks; the
    # message is open now).
    chunks = (await message_crud.chunk_texts(db, [row.id])).get(row.id) if return_text else None
    return _with_length(ctx, row, chunks, row.partial_length, return_text=return_text)


def _with_length(
    ctx: RequestContext,
    row: StoredMessage,
    chunk_text: str | None,
    length: int,
    *,
    return_text: bool,
) -> MessageWithLength:
    fields = read_fields(ctx, row, chunk_text, datetime.now(UTC))
    if not return_text:
        fields["partial_content"] = None
    return MessageWithLength(**fields, length=length)


async def _explain_refused_delta(
    ctx: RequestContext,
    delta: message_crud.Delta,
    *,
    last_try: bool,
    return_text: bool,
) -> MessageWithLength | None:
    """Why a delta was refused: the answer for a retry of a stored delta, or the error; None
    when the delta fits the message as it is now (then it may be tried once more).

    The message and its text are read once, and the answer is made of that one reading: after
    a delta that committed by itself no lock keeps other writers out between two reads."""
    row, chunks, text = await read_text(
        ctx.db, await owned_message(ctx, delta.session_id, delta.message_id)
    )
    length = len(text)
    end = delta.offset + len(delta.text)
    if end == length and text[delta.offset :] == delta.text:
        # A retry of the delta stored last: nothing changes. Only the last: the same text
        # found earlier, with more after it, was written by another writer (the answer to a
        # retry would send this one on after that text, repeating it).
        # (its text as to_reads() reads it: the chunks of open messages only)
        chunk_text = chunks if row.status in OPEN_STATUSES else None
        return _with_length(ctx, row, chunk_text, length, return_text=return_text)
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
