from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from chat_store.models.base import Base, new_id, utcnow

# None is SQL NULL (not JSON null): "has tool calls" is `tool_calls IS NOT NULL`.
NULLABLE_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# The statuses of a message still being written (its text in chunks, not in `content`).
OPEN_STATUSES = ("pending", "in_progress")


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        # The per-session cursor: gap-free, never reused, and the index behind every history read.
        UniqueConstraint("session_id", "seq"),
        # An owner's messages newest first: search ranks the newest matches of a common word
        # (migration 0006_search_recent); it serves every lookup by owner as well.
        Index("ix_message_user_id_created_at", "user_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    # Denormalised owner: search and export filter by owner without joining sessions.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text)
    # While streaming, the text so far is partial_content (a folded prefix, may be null)
    # followed by the message_chunk rows in order; terminal moves fold the chunks back in.
    partial_content: Mapped[str | None] = mapped_column(Text)
    # Length in code points and UTF-8 bytes of the streamed text: the offset check and the
    # size limit of an append are answered from these, without reading the text.
    partial_length: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    partial_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict[str, Any] | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    token_count: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # The session's history_version when this message was created and last changed: the
    # cursor of the session's change feed (/events) is that version.
    created_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # An assistant message's calls of the client's tools, as the API shows them
    # ([{"id", "name", "arguments"}]); a tool message's answer names its call in tool_call_id.
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(NULLABLE_JSON)
    tool_call_id: Mapped[str | None] = mapped_column(String(200))


class MessageTombstone(Base):
    """A deleted message, kept so that the session's change feed can replay the deletion."""

    __tablename__ = "message_tombstone"
    __table_args__ = (Index("ix_message_tombstone_session_id_version", "session_id", "version"),)

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)


class ArchivedMessage(Base):
    """The id of a message of an archived session: the message itself is only in the session's
    archive object. Written by the archive's commit (with the messages' deletion) and removed by
    the restore (with their insertion), so that an id stays taken while its message is away: a
    message created with it is refused as one created with a stored or deleted message's id."""

    __tablename__ = "archived_message"
    # The restore removes a session's ids, and deleting a session cascades here: both by session.
    __table_args__ = (Index("ix_archived_message_session_id", "session_id"),)

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))


class MessageChunk(Base):
    """One appended delta of a streaming message.

    Deltas are rows rather than `text || delta`: an UPDATE of a growing text rewrites the whole
    value (TOAST and WAL) every time, so the cost per delta would grow with the answer.
    """

    __tablename__ = "message_chunk"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    # Code-point offset of this delta's first character in the message's streamed text.
    start: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)
