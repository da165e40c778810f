from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from chat_store.models.base import Base, utcnow


class ArchiveDeletion(Base):
    """An archive object whose session is gone (deleted, or purged by retention): written in
    the transaction that deletes the session's rows, and removed once the object is deleted.
    The object is deleted only after that commit (services/archive/deletions.py), so a deletion
    that is undone (an error, a timeout, a process stopped) never leaves a session whose only
    copy is gone; one the store refused, or that a stopped process never got to, is deleted by
    the next housekeeping run."""

    __tablename__ = "archive_deletion"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the store last refused to delete it: tried again after those never tried, so that
    # objects it keeps refusing (a lock on them) hold back no other.
    refused_at: Mapped[datetime | None]
