"""What archiving and restoring both need: the sessions and the store (`Archiver`), where a
session's object lies, what it carries beside the messages, and the failures that leave a
session as it was."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, Uuid
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.errors import ArchiveUnavailable
from chat_store.models import Generation
from chat_store.models.base import UTCDateTime, attribute_columns
from chat_store.services import export
from chat_store.storage import ArchiveStore

KEY_PREFIX = "chat_archives"

# The archive object's member, beside the chat-store/1 document's "messages", that carries the
# session's generations. An object written before it existed has none: its generations are lost
# (a continue of one of its answers starts over, as for an answer a client wrote).
GENERATIONS = "generations"


def object_key(session_id: uuid.UUID, at: datetime) -> str:
    # One key per archive, never used again: an object listed for deletion after its session
    # was deleted (deletions.py) is never a later session's, one made with the same id.
    return f"{KEY_PREFIX}/{at:%Y}/{at:%m}/{session_id}/{at:%Y%m%dT%H%M%S.%fZ}.json.gz"


@dataclass(frozen=True)
class Archiver:
    """What archiving needs: sessions of its own (it commits step by step) and the store."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: ArchiveStore

    @property
    def source(self) -> export.ExportSource:
        return export.ExportSource(self.sessionmaker, self.store)


# A generation's columns the archive leaves out: whose it is (the restore writes the session's
# and its owner's) and its lease (no process holds one after a restore: a session is not
# archived while one of its answers is generated, and a restore starts no run). Every other
# column is carried, one added later too, so that none is lost by an archive and its restore.
_LEFT_OUT = frozenset({"session_id", "user_id", "owner", "lease_expires_at"})
_CARRIED = [
    (attribute, column)
    for attribute, column in attribute_columns(Generation)
    if column not in _LEFT_OUT
]
_GENERATION_COLUMNS = cast(Table, Generation.__table__).c


def _encoded(value: Any) -> Any:
    if isinstance(value, datetime):
        return export.time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _decoded(column: str, value: Any) -> Any:
    kind = _GENERATION_COLUMNS[column].type
    if value is None or not isinstance(kind, (UTCDateTime, Uuid)):
        return value
    if not isinstance(value, str):
        raise TypeError(column)
    return export.parse_time(value) if isinstance(kind, UTCDateTime) else uuid.UUID(value)


@dataclass(frozen=True)
class ArchivedGeneration:
    """A generation as the archive object carries it, a JSON object of its columns by name:
    what a continue of the answer after the restore needs (the turn's params, its runs)."""

    message_id: uuid.UUID
    values: dict[str, Any]  # the carried columns by name (message_id among them), as stored

    @classmethod
    def from_row(cls, row: Generation) -> ArchivedGeneration:
        values = {column: getattr(row, attribute) for attribute, column in _CARRIED}
        return cls(row.message_id, values)

    def to_dict(self) -> export.Document:
        return {column: _encoded(value) for column, value in self.values.items()}

    @classmethod
    def from_dict(cls, document: export.Document) -> ArchivedGeneration:
        """The carried columns `document` has (one written before a column was added lacks
        it: the column's default applies). KeyError, TypeError or ValueError when it is not a
        generation."""
        values = {
            column: _decoded(column, document[column])
            for _, column in _CARRIED
            if column in document
        }
        return cls(values["message_id"], values)

    def columns(self, session_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
        """The generation's row, no process holding it."""
        return {
            **self.values,
            "session_id": session_id,
            "user_id": user_id,
            "owner": None,
            "lease_expires_at": None,
        }


class ArchiveAborted(Exception):
    """The session changed, or another process moved it, while it was being archived: nothing
    was archived and nothing is lost; a later run tries again."""


class ArchiveConflict(ArchiveUnavailable):
    """An archived session cannot be restored: a message of its object has an id that another
    session's message has now (its id was not kept taken: the session was archived before
    migration 0010_archived_message, or the row was written by hand). Restored, one of the two
    would be lost; nothing is changed instead and the session stays archived with its object,
    for an operator to settle (docs/operations.md, Archive)."""
