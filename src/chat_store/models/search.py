"""The search index, which lives beside the models rather than in them.

Migration 0003_search builds it and triggers keep it: on Postgres a `search_vector` column of
message (its words tagged with their owner since 0007_search_owned) and two GIN indexes, on
SQLite FTS5 tables (and their shadow tables) over views, the messages' in 16 tables by owner
since 0008_search_parts. No model maps them, so what autogenerate compares must leave them out.
"""

from __future__ import annotations

import uuid

from alembic.runtime.environment import NameFilterParentNames, NameFilterType

SEARCH_COLUMNS = frozenset({"search_vector"})
SEARCH_INDEXES = frozenset({"ix_message_search", "ix_chat_session_search"})
SEARCH_TABLE_PREFIXES = ("message_fts", "chat_session_fts")
# SQLite: the FTS5 tables of the messages, one per last hex digit of the owner's id.
MESSAGE_FTS_PARTS = "0123456789abcdef"


def message_fts_table(owner: uuid.UUID) -> str:
    """The SQLite FTS5 table that indexes `owner`'s messages."""
    return f"message_fts_{owner.hex[-1]}"


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic's `include_name` hook: False for the search index's own objects."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(SEARCH_TABLE_PREFIXES)
    if type_ == "column":
        return name not in SEARCH_COLUMNS
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True
