from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from chat_store.models.base import Base, new_id, utcnow


class ChatSession(Base):
    __tablename__ = "chat_session"
    __table_args__ = (
        # The session list: newest activity first per owner, keyset on (last_activity_at, id).
        Index("ix_chat_session_user_activity", "user_id", "last_activity_at", "id"),
        # Retention: sessions idle since a cut-off, across all owners.
        Index("ix_chat_session_last_activity_at", "last_activity_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(400))
    is_favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    workspace_repo: Mapped[str | None] = mapped_column(String(500))
    workspace_branch: Mapped[str | None] = mapped_column(String(500))
    workspace_path: Mapped[str | None] = mapped_column(String(2000))
    # Sent first to the model by the service's own chat turns.
    system_prompt: Mapped[str | None] = mapped_column(Text)
    # Counters kept exact by the append path, which updates this row in the same transaction.
    message_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Bumped by every change to the session's messages (in the same transaction): a cached copy
    # of the history is served only while its version equals this one.
    history_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # history_version at the last change of the session's own fields (title, status, ...).
    updated_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_message_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
