"""The tables the message statements run on, as Core tables and their columns.

The statements of the append and delta paths are built once, with bound parameters, as Core
statements on the tables: building one per request (and walking it for its cache key) and the
ORM's bulk-UPDATE machinery cost more CPU than the round trip itself.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from chat_store.models import ChatSession, Message, MessageChunk
from chat_store.models.base import attribute_columns

MESSAGE_TABLE = cast(Table, Message.__table__)
CHAT_SESSION_TABLE = cast(Table, ChatSession.__table__)
CHUNK_TABLE = cast(Table, MessageChunk.__table__)
CHAT_SESSION = CHAT_SESSION_TABLE.c
MESSAGE = MESSAGE_TABLE.c
MESSAGE_ATTRS = attribute_columns(Message)
