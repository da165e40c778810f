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


async def context_window(
    ctx: RequestContext, session_id: uuid.UUID, max_tokens: int
) -> ContextWindow:
    chat_session = await chat_session_service.get_owned(ctx, session_id)
    # Read newest first in pages until the budget is certainly exceeded; a group may straddle
    # a page boundary, so one extra group's worth is read before selecting.
    loaded: list[MessageRead] = []
    before_seq: int | None = None
    budget_seen = 0
    while True:
        rows, has_more = await message_crud.list_by_seq(
            ctx.db, session_id, after_seq=None, before_seq=before_seq, descending=True, limit=200
        )
        reads = await to_reads(ctx, rows)
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
        truncated=len(chosen) < chat_session.message_count,
        omitted_count=max(0, chat_session.message_count - len(chosen)),
    )
