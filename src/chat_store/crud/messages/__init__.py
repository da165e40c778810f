"""Message SQL: the session row's sequence and counters, message rows and reads, the delta
statement, tombstones. One module per part; every name other layers use is importable here."""

from chat_store.crud.messages.deltas import (
    Delta,
    append_delta,
    chunk_parts,
    chunk_texts,
    delete_chunks,
    insert_chunk,
)
from chat_store.crud.messages.rows import (
    INSERT_BATCH,
    Appended,
    StoredMessage,
    any_message_id_exists,
    append_one,
    append_with_prompt,
    changed_since,
    delete_message,
    flush,
    get_by_ids,
    get_for_owner,
    get_seq,
    insert_messages,
    list_by_seq,
    newest_resumable,
    open_in_session,
    recent_tool_calls,
    update_message,
)
from chat_store.crud.messages.sequence import (
    SeqReservation,
    adjust_counters,
    bump_history_version,
    get_history_state,
    reserve_seqs,
    reset_last_message_at,
)
from chat_store.crud.messages.tombstones import add_tombstone, deleted_since

# Former names, kept while code written against them moves to the names above.
MessageValues = StoredMessage
MessageRow = StoredMessage
bump_session = bump_history_version

__all__ = [
    "INSERT_BATCH",
    "Appended",
    "Delta",
    "MessageRow",
    "MessageValues",
    "SeqReservation",
    "StoredMessage",
    "add_tombstone",
    "adjust_counters",
    "any_message_id_exists",
    "append_delta",
    "append_one",
    "append_with_prompt",
    "bump_history_version",
    "bump_session",
    "changed_since",
    "chunk_parts",
    "chunk_texts",
    "delete_chunks",
    "delete_message",
    "deleted_since",
    "flush",
    "get_by_ids",
    "get_for_owner",
    "get_history_state",
    "get_seq",
    "insert_chunk",
    "insert_messages",
    "list_by_seq",
    "newest_resumable",
    "open_in_session",
    "recent_tool_calls",
    "reserve_seqs",
    "reset_last_message_at",
    "update_message",
]
