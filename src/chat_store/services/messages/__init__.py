"""Messages: seq assignment, the status lifecycle, streamed deltas, resume, fork and context.

One module per part; every name other layers use is importable from here.
"""

from chat_store.services.messages.appending import (
    ID_TAKEN,
    append_with_prompt,
    create_message,
    create_messages,
)
from chat_store.services.messages.changing import delete_message, update_message
from chat_store.services.messages.context import (
    context_window,
    message_tokens,
    newest_history,
    select_context,
)
from chat_store.services.messages.deltas import append_delta
from chat_store.services.messages.forking import fork, resume
from chat_store.services.messages.reading import (
    get_message,
    is_stale,
    list_messages,
    read_text,
    shown_partial,
    to_reads,
)
from chat_store.services.messages.rules import (
    CHARS_PER_TOKEN,
    TRANSITIONS,
    check_transition,
    estimate_tokens,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "ID_TAKEN",
    "TRANSITIONS",
    "append_delta",
    "append_with_prompt",
    "check_transition",
    "context_window",
    "create_message",
    "create_messages",
    "delete_message",
    "estimate_tokens",
    "fork",
    "get_message",
    "is_stale",
    "list_messages",
    "message_tokens",
    "newest_history",
    "read_text",
    "resume",
    "select_context",
    "shown_partial",
    "to_reads",
    "update_message",
]
