"""Import files (the CLI's `import`): their conversations, read one at a time."""

from __future__ import annotations

import json
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
        owner = head.get("user", {}).get("email") if head["type"] == "account" else None
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


def _read(current: dict[str, Any] | None, broken: str | None) -> dict[str, Any] | Unreadable:
    if broken is not None or current is None:
        return Unreadable(broken or "a session that could not be read")
    return current


def _jsonl_conversations(
    path: Path, source: SourceFile
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """Each session line with the message lines after it, as one chat-store/1 document. A line
    that cannot be read fails its session alone (reported as Unreadable), and reading goes on
    at the next session line."""
    current: dict[str, Any] | None = None
    broken: str | None = None  # why the conversation being read cannot be imported
    pending = False  # a conversation (whole or broken) read and not yet handed out
    index = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            source.progress += len(line)
            if not line.strip():
                continue
            record = _record(line)
            kind = record.get("type") if record is not None else None
            body = record.get(kind) if record is not None and isinstance(kind, str) else None
            if kind == "session":
                if pending:
                    yield _label(index, current), _read(current, broken)
                    index += 1
                pending = True
                if isinstance(body, dict):
                    current, broken = (
                        {"format": export.FORMAT, "session": body, "messages": []},
                        None,
                    )
                else:
                    current, broken = None, f"line {number}: a session record without its session"
            elif kind == "message" and pending:
                if isinstance(body, dict) and current is not None:
                    current["messages"].append(body)
                elif broken is None:
                    broken = f"line {number}: a message record without its message"
            elif record is None and broken is None and pending:
                broken = f"line {number}: not a JSON object (cut short?)"
    source.progress = source.total
    if pending:
        yield _label(index, current), _read(current, broken)


async def owner_id(db: AsyncSession, email: str) -> uuid.UUID:
    user = await user_crud.get_by_email(db, normalize_email(email))
    if user is None:
        raise NotFound(f"No user with email {email}")
    return user.id
