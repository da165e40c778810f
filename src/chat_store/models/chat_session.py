from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from chat_store.models.base import Base, new_id, utcnow


class ChatSession(Base):
    __tablename__ = "chat_session"
    __table_args__ = (
        # The session list: newest activity first per owner, keyset on (last_activity_at, id).
        Index("ix_chat_session_user_activity", "user_id", "last_activity_at", "id"),
        # Retention: sessions idle since a cut-off, across all owners.
        Index("ix_chat_session_last_activity_at", "last_activity_at"),
        # Archiving: sessions not archived yet, idle since a cut-off (archived ones, which pile
        # up, stay out of the scan).
        Index(
            "ix_chat_session_archive_due",
            "last_activity_at",
            postgresql_where=text("archived_at IS NULL"),
            sqlite_where=text("archived_at IS NULL"),
        ),
        # Sessions with an archive object: archived, or with an archive or restore unfinished.
        Index(
            "ix_chat_session_archive_key",
            "archive_key",
            postgresql_where=text("archive_key IS NOT NULL"),
            sqlite_where=text("archive_key IS NOT NULL"),
        ),
        # An imported source conversation is one session per owner (NULLs do not collide).
        Index(
            "uq_chat_session_user_id_source_fingerprint",
            "user_id",
            "source_fingerprint",
            unique=True,
        ),
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
    # The sum of the messages' token_count: past 32 bits (SQLite's INTEGER is 64-bit anyway).
    total_tokens: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), default=0, server_default="0"
    )
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
    # Archive (services/archive/): archived_at is set while the messages are only in the
    # object at archive_key; archive_key alone (archived_at null) marks an archive being written
    # or a restore whose object is still to be deleted. restored_at keeps a restored session
    # from being archived again before it has been idle for the threshold once more.
    archived_at: Mapped[datetime | None]
    archive_key: Mapped[str | None] = mapped_column(String(300))
    restored_at: Mapped[datetime | None]
    # SHA-256 of an imported conversation as given (services/imports.py): importing it again
    # finds this session.
    source_fingerprint: Mapped[str | None] = mapped_column(String(64))
