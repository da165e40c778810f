"""The context window: the newest messages that fit a token budget."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from chat_store.crud import messages as message_crud
from chat_store.schemas.messages import ContextWindow, MessageRead
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services.context import RequestContext
from chat_store.services.messages.reading import to_reads
from chat_store.services.messages.rules import estimate_tokens


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


_HISTORY_PAGE = 200


async def newest_history(
    ctx: RequestContext,
    session_id: uuid.UUID,
    max_tokens: int,
    *,
    before_seq: int | None = None,
    with_user_message: bool = False,
) -> list[MessageRead]:
    """The session's messages before `before_seq` (None: all), oldest first, enough of them
    for `max_tokens`: read newest first, page by page, until they certainly hold more than the
    budget, and then on while the oldest read is a tool result (a group may straddle a page
    boundary: its call is read too); with `with_user_message`, until one is a user message."""
    loaded: list[MessageRead] = []
    seen = 0
    while True:
        rows, has_more = await message_crud.list_by_seq(
            ctx.db, session_id, _HISTORY_PAGE, before_seq=before_seq, descending=True
        )
        reads = await to_reads(ctx, rows)
        loaded[:0] = list(reversed(reads))
        seen += sum(message_tokens(message) for message in reads)
        if not has_more or not rows:
            return loaded
        before_seq = rows[-1].seq
        has_user = not with_user_message or any(read.role == "user" for read in loaded)
        if has_user and seen > max_tokens and loaded[0].role != "tool":
            return loaded


async def context_window(
    ctx: RequestContext, session_id: uuid.UUID, max_tokens: int
) -> ContextWindow:
    chat_session = await chat_session_service.get_owned(ctx, session_id)
    loaded = await newest_history(ctx, session_id, max_tokens)
    chosen, total = select_context(loaded, max_tokens)
    return ContextWindow(
        data=chosen,
        token_count=total,
        truncated=len(chosen) < chat_session.message_count,
        omitted_count=max(0, chat_session.message_count - len(chosen)),
    )
