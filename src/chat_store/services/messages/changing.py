"""Changing and deleting messages: status moves, text, counters, tombstones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chat_store.crud import generations as generation_crud
from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.errors import ChatSessionNotFound, ValidationFailed
from chat_store.schemas.messages import OPEN_STATUSES, MessageRead, MessageUpdate
from chat_store.services import events, limits
from chat_store.services.context import RequestContext
from chat_store.services.messages import tools
from chat_store.services.messages.reading import full_text, owned_message, to_reads
from chat_store.services.messages.rules import check_transition, utf8_len


async def update_message(
    ctx: RequestContext,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    body: MessageUpdate,
    *,
    metadata_by_service: bool = False,
) -> MessageRead:
    """`metadata_by_service`: the metadata is the stored one with the service's own few keys
    added (a generation's usage, finish reason or failure): MAX_METADATA_BYTES is the client's
    limit, and an answer whose client filled it must still complete or fail."""
    db, settings = ctx.db, ctx.settings
    if not metadata_by_service:
        limits.check_metadata(settings, body.metadata, ["body", "metadata"])
    version = await _bump_history_version(ctx, session_id)
    row = await owned_message(ctx, session_id, message_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    new_status: str = changes.get("status") or row.status
    check_transition(row.status, new_status)
    if "tool_calls" in changes:
        tools.change_calls(ctx, row, body.tool_calls)
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
    limits.check_text(settings, changes.get("content"), "content")
    limits.check_text(settings, changes.get("partial_content"), "partial_content")

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
    await message_crud.update_message(db, row)
    read = (await to_reads(ctx, [row]))[0]
    event = events.MessageUpdated(version, read.model_dump(mode="json"))
    events.publish_after_commit(db, ctx.bus, session_id, event)
    return read


async def _bump_history_version(ctx: RequestContext, session_id: uuid.UUID) -> int:
    """Bump the session's history version (taking its row lock first); 404 if not the caller's.
    A session archived since the request looked (the archive committed in between) has its
    messages brought back first, as an append's refusal does."""
    user_id = ctx.principal.user_id
    version = await message_crud.bump_history_version(
        ctx.db, user_id, session_id, now=datetime.now(UTC)
    )
    if version is None:
        state = await message_crud.get_history_state(ctx.db, user_id, session_id)
        if state is None or not state.archived:
            raise ChatSessionNotFound()
        await ctx.restore_archived(session_id)
        version = await message_crud.bump_history_version(
            ctx.db, user_id, session_id, now=datetime.now(UTC)
        )
    if version is None:
        raise ChatSessionNotFound()
    return version


def _set_streamed_text(row: StoredMessage, text: str) -> None:
    row.partial_content = text
    row.partial_length = len(text)
    row.partial_bytes = utf8_len(text)


def _complete(row: StoredMessage, text: str, at: datetime) -> None:
    row.content = text
    row.partial_content = None
    row.partial_length = len(text)
    row.partial_bytes = utf8_len(text)
    row.completed_at = at


async def delete_message(ctx: RequestContext, session_id: uuid.UUID, message_id: uuid.UUID) -> None:
    db = ctx.db
    # The answer's lease row first, before the session's and the message's: the order a
    # completion or a cancel takes them in (crud/generations.py).
    generating = await generation_crud.lock_leases(
        db, ctx.principal.user_id, session_id=session_id, message_id=message_id
    )
    version = await _bump_history_version(ctx, session_id)
    row = await owned_message(ctx, session_id, message_id, for_update=True)
    await message_crud.delete_message(db, row.id)
    events.stop_generations_after_commit(db, ctx.bus, generating)
    # The change feed's replay reports the deletion from this record.
    await message_crud.add_tombstone(db, session_id, row.id, row.seq, version)
    # last_seq is left alone: a deleted message's seq is never given out again.
    await message_crud.adjust_counters(
        db, session_id, count_delta=-1, token_delta=-(row.token_count or 0)
    )
    await message_crud.reset_last_message_at(db, session_id)
    deleted = events.MessageDeleted(version, message_id=str(row.id), seq=row.seq)
    events.publish_after_commit(db, ctx.bus, session_id, deleted)
