"""Import files (the CLI's `import`): their conversations, read one at a time."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import users as user_crud
from chat_store.errors import NotFound
from chat_store.services import export
from chat_store.services.auth import normalize_email


@dataclass
class SourceFile:
    """The conversations of an import file, read one at a time.

    `total` is what `progress` counts towards: bytes for JSONL (read line by line, one session
    in memory at a time), conversations for a JSON document or list."""

    owner_email: str | None  # the account of a chat-store/1 account export
    total: int
    progress: int = 0
    conversations: Iterator[tuple[str, Any]] = field(default_factory=lambda: iter(()))


def open_source(path: Path) -> SourceFile:
    """A chat-store/1 JSONL export (a session's or an account's), a JSON list of conversations
    (ChatGPT's conversations.json; chat-store/1 or plain documents), or one conversation."""
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if (
        isinstance(head, dict)
        and head.get("format") == export.FORMAT
        and head.get("type") in ("account", "session")
    ):
        user = head.get("user") if head["type"] == "account" else None
        email = user.get("email") if isinstance(user, dict) else None
        owner = email if isinstance(email, str) else None  # else --user names the owner
        source = SourceFile(owner_email=owner, total=path.stat().st_size)
        source.conversations = _jsonl_conversations(path, source)
        return source
    document = json.loads(path.read_bytes())
    items = document if isinstance(document, list) else [document]
    source = SourceFile(owner_email=None, total=len(items))
    source.conversations = _listed_conversations(items, source)
    return source


@dataclass(frozen=True)
class Unreadable:
    """A conversation of an import file that could not be read (a line that is not JSON, or
    not a record of the format): why, to report it; the others are imported."""

    reason: str


def _label(index: int, document: Any) -> str:
    title = None
    if isinstance(document, dict):
        session = document.get("session")
        title = document.get("title") or (
            session.get("title") if isinstance(session, dict) else None
        )
    return f"#{index + 1}" + (f" ({title})" if isinstance(title, str) and title else "")


def _listed_conversations(items: list[Any], source: SourceFile) -> Iterator[tuple[str, Any]]:
    for index, item in enumerate(items):
        source.progress = index + 1
        yield _label(index, item), item


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# The start of an export's record, as it writes them (`type` first): a line cut short
# still says what it was, and a message line whose session.
_RECORD_START = re.compile(
    rb'^\s*\{\s*"type"\s*:\s*"(session|message)"(?:\s*,\s*"session_id"\s*:\s*"([^"\\]*)")?'
)


class _JsonlReader:
    """The state of reading a JSONL export: the conversation being read, and the lines that
    could not be read and are not yet known to be its messages or a next session's record.
    A cut line says what it was by its start when it can; else the `session_id` of the next
    message line says whose it was."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = None  # the document being read, if its record was
        self.current_id: object = None  # its session's id, as its message records name it
        self.named = False  # current_id was taken from a message record
        self.broken: str | None = None  # why it cannot be imported
        self.pending = False  # a conversation read (whole or broken) and not yet handed out
        self.unread: list[int] = []  # numbers of lines not read, not yet attributed
        self.index = 0

    def _out(self) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        if self.pending:
            if self.broken is not None or self.current is None:
                why = self.broken or "a session that could not be read"
                yield _label(self.index, self.current), Unreadable(why)
            else:
                yield _label(self.index, self.current), self.current
            self.index += 1
        self.pending, self.current, self.current_id, self.broken = False, None, None, None
        self.named = False

    def _start(self, session: dict[str, Any] | None, broken: str | None) -> None:
        self.pending, self.broken, self.named = True, broken, False
        self.current = (
            None
            if session is None
            else {"format": export.FORMAT, "session": session, "messages": []}
        )
        self.current_id = session.get("id") if session is not None else None

    def _lost(self, number: int) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        """A session whose record is the unread line `number`: reported as failed."""
        yield from self._out()
        self._start(None, f"line {number}: the session record cannot be read (cut short?)")

    def _settle_unread(self) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        """Nothing after the unread lines says whose they were: the conversation being read
        may miss a message, and each further line may have been a session's record. All are
        reported (a session lost is never passed over in silence)."""
        unread, self.unread = self.unread, []
        for position, number in enumerate(unread):
            if position == 0 and self.pending:
                self.broken = self.broken or f"line {number}: not a JSON record (cut short?)"
            else:
                yield from self._lost(number)

    def session(
        self, body: object, number: int
    ) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        yield from self._settle_unread()
        yield from self._out()
        if isinstance(body, dict):
            self._start(body, None)
        else:
            self._start(None, f"line {number}: a session record without its session")

    def message(
        self, session_id: object, body: object, number: int
    ) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        if self.unread:
            unread, self.unread = self.unread, []
            if self.pending and session_id in (None, self.current_id):
                # They were this session's messages.
                self.broken = self.broken or f"line {unread[0]}: a message that cannot be read"
            else:
                # The last was this message's session's record; any before it, the session
                # being read's (or, with none, sessions of their own).
                for earlier in unread[:-1]:
                    if self.pending:
                        self.broken = self.broken or f"line {earlier}: not a JSON record"
                    else:
                        yield from self._lost(earlier)
                yield from self._lost(unread[-1])
                self.current_id, self.named = session_id, True
        if session_id is not None and (
            not self.pending or (self.named and session_id != self.current_id)
        ):
            # A message of another session than the one whose messages are being read (as the
            # first of them named it: other tools' files may name another id than the
            # session's own), with no record of its own before it, left out of the file: that
            # session is reported, its messages never put into the one before.
            yield from self._out()
            self._start(None, f"line {number}: messages of a session whose record is missing")
            self.current_id, self.named = session_id, True
            return
        if not self.pending:
            return  # messages before any session, naming none: nothing they could belong to
        if not self.named and session_id is not None:
            # Whose messages these are, as the records name it (an export: the session's id).
            self.current_id, self.named = session_id, True
        if not isinstance(body, dict):
            self.broken = self.broken or f"line {number}: a message that cannot be read"
        elif self.current is not None:
            self.current["messages"].append(body)

    def cut(self, line: bytes, number: int) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        """A line that is not a JSON record."""
        start = _RECORD_START.match(line)
        if start is None:
            self.unread.append(number)
        elif start.group(1) == b"session":
            yield from self._settle_unread()
            yield from self._lost(number)
        else:
            named = start.group(2)
            yield from self.message(named.decode() if named is not None else None, None, number)

    def end(self) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
        yield from self._settle_unread()
        yield from self._out()


def _jsonl_conversations(
    path: Path, source: SourceFile
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """Each session line with the message lines after it, as one chat-store/1 document. A line
    that cannot be read fails the session it belongs to alone (reported as Unreadable), and
    reading goes on."""
    reader = _JsonlReader()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            source.progress += len(line)
            if not line.strip():
                continue
            record = _record(line)
            kind = record.get("type") if record is not None else None
            if record is None:
                yield from reader.cut(line, number)
            elif kind == "session":
                yield from reader.session(record.get("session"), number)
            elif kind == "message":
                yield from reader.message(record.get("session_id"), record.get("message"), number)
    source.progress = source.total
    yield from reader.end()


async def owner_id(db: AsyncSession, email: str) -> uuid.UUID:
    user = await user_crud.get_by_email(db, normalize_email(email))
    if user is None:
        raise NotFound(f"No user with email {email}")
    return user.id
