"""Tool calls: an assistant message's calls of the client's functions, and the tool messages
that answer them (docs/api.md, "Tool calls").

The shape of a call and who may carry what are the schema's checks; here are the rules that
need the app's settings or the stored session: the size of a call's arguments, and that a tool
message answers a call that was made.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.errors import UnknownToolCall, ValidationFailed
from chat_store.schemas.messages import MessageCreate, ToolCall
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import limits
from chat_store.services.context import RequestContext

# A tool message answers a call made among the session's last this many messages: the lookup
# is one bounded range of the (session_id, seq) index, however long the session.
ANSWER_WINDOW = 1000


def check_sizes(ctx: RequestContext, calls: Sequence[ToolCall] | None, field: str) -> None:
    """A call's arguments are text the model wrote: limited as a message's text is (413)."""
    for index, call in enumerate(calls or ()):
        limits.check_text(ctx.settings, call.arguments, f"{field}[{index}].arguments")


def change_calls(ctx: RequestContext, row: StoredMessage, calls: list[ToolCall] | None) -> None:
    """Set (or with None clear) the calls of an assistant message, e.g. as its writer completes
    it."""
    if row.role != "assistant":
        raise ValidationFailed(
            "only an assistant message carries tool_calls", ["body", "tool_calls"]
        )
    check_sizes(ctx, calls, "tool_calls")
    row.tool_calls = stored_calls(calls)


def stored_calls(calls: Sequence[ToolCall] | None) -> list[dict[str, Any]] | None:
    """The calls as a message row keeps them (and the API shows them)."""
    return [call.model_dump() for call in calls] if calls else None


class SessionArchived(Exception):
    """The session's messages are archived: the append restores them and tries again."""


async def check_answers(
    ctx: RequestContext, session_id: uuid.UUID, items: Sequence[MessageCreate], *, batch: bool
) -> None:
    """Each tool message answers a call of an assistant message before it: one earlier in the
    same batch, or one stored among the session's last ANSWER_WINDOW messages (422
    unknown_tool_call otherwise)."""
    made_here: set[str] = set()
    made_before: set[str] | None = None
    for index, item in enumerate(items):
        made_here.update(call.id for call in item.tool_calls or ())
        answered = item.tool_call_id
        if answered is None or answered in made_here:
            continue
        if made_before is None:
            stored = await message_crud.recent_tool_calls(
                ctx.db, ctx.principal.user_id, session_id, ANSWER_WINDOW
            )
            made_before = {str(call.get("id")) for calls in stored for call in calls}
        if answered not in made_before:
            # Another user's session (or none) is a 404, as the append itself would answer.
            chat_session = await chat_session_service.get_owned(ctx, session_id)
            if chat_session.archived_at is not None:
                # Its messages, the calls among them, are in the archive: restored, then
                # checked again (the append restores what it finds archived).
                raise SessionArchived()
            loc: list[str | int] = (
                ["body", "messages", index, "tool_call_id"] if batch else ["body", "tool_call_id"]
            )
            raise UnknownToolCall(
                f"tool_call_id {answered!r} answers no tool call of an earlier assistant "
                f"message of this session (among its last {ANSWER_WINDOW} messages)",
                loc,
            )
