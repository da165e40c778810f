"""What archiving and restoring both need: the sessions and the store (`Archiver`), where a
session's object lies, and the failure that leaves a session as it was."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.services import export
from chat_store.storage import ArchiveStore

KEY_PREFIX = "chat_archives"


def object_key(session_id: uuid.UUID, at: datetime) -> str:
    return f"{KEY_PREFIX}/{at:%Y}/{at:%m}/{session_id}.json.gz"


@dataclass(frozen=True)
class Archiver:
    """What archiving needs: sessions of its own (it commits step by step) and the store."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: ArchiveStore

    @property
    def source(self) -> export.ExportSource:
        return export.ExportSource(self.sessionmaker, self.store)


class ArchiveAborted(Exception):
    """The session changed, or another process moved it, while it was being archived: nothing
    was archived and nothing is lost; a later run tries again."""
