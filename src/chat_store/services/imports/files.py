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


def _label(index: int, document: Any) -> str:
    title = None
    if isinstance(document, dict):
        title = document.get("title") or (document.get("session") or {}).get("title")
    return f"#{index + 1}" + (f" ({title})" if isinstance(title, str) and title else "")


def _listed_conversations(items: list[Any], source: SourceFile) -> Iterator[tuple[str, Any]]:
    for index, item in enumerate(items):
        source.progress = index + 1
        yield _label(index, item), item


def _jsonl_conversations(path: Path, source: SourceFile) -> Iterator[tuple[str, Any]]:
    """Each session line with the message lines after it, as one chat-store/1 document."""
    current: dict[str, Any] | None = None
    index = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            kind = record.get("type")
            if kind == "session":
                if current is not None:
                    yield _label(index, current), current
                    index += 1
                current = {"format": export.FORMAT, "session": record["session"], "messages": []}
            elif kind == "message" and current is not None:
                current["messages"].append(record["message"])
            source.progress += len(line)
    source.progress = source.total
    if current is not None:
        yield _label(index, current), current


async def owner_id(db: AsyncSession, email: str) -> uuid.UUID:
    user = await user_crud.get_by_email(db, normalize_email(email))
    if user is None:
        raise NotFound(f"No user with email {email}")
    return user.id
