"""Import: a chat-store/1 export, one ChatGPT conversation, or a plain list of messages becomes
one session, all of it or nothing.

The same source conversation imported twice is the same session: its fingerprint (SHA-256 of
the conversation as validated, ids and the export time left out) is kept on the session, unique
per owner, and a second import answers the session the first one made.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import export as export_crud
from chat_store.crud import messages as message_crud
from chat_store.crud import users as user_crud
from chat_store.errors import NotFound, ValidationFailed
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from chat_store.models.base import attribute_columns
from chat_store.schemas.chat_sessions import ChatSessionRead, Workspace
from chat_store.schemas.common import check_text
from chat_store.schemas.export import (
    ChatStoreDocument,
    ImportedMessage,
    ImportFormat,
    ImportResult,
    ImportSource,
    PlainImport,
)
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import export, idempotency, limits
from chat_store.services.auth import normalize_email
from chat_store.services.context import RequestContext
from chat_store.settings import Settings

Loc = list[str | int]
M = TypeVar("M", bound=BaseModel)
_SESSION_COLUMNS = attribute_columns(ChatSession)


@dataclass(frozen=True)
class ImportSpec:
    """A source conversation, validated and reduced to what the session will hold."""

    format: ImportFormat
    title: str | None
    is_favorite: bool
    status: str
    metadata: dict[str, Any]
    workspace: Workspace | None
    created_at: datetime | None
    updated_at: datetime | None
    ended_at: datetime | None
    last_message_at: datetime | None
    last_seq: int | None
    # Message documents (the export's message shape, times in UTC), in order.
    messages: list[dict[str, Any]]
    fingerprint: str


def detect_format(document: Any) -> ImportFormat:
    if isinstance(document, dict):
        if "format" in document:
            return "chat-store"
        if "mapping" in document:
            return "chatgpt"
        if "messages" in document:
            return "plain"
    raise ValidationFailed(
        "not a chat-store/1 export, a ChatGPT conversation or {'messages': [...]}", ["body"]
    )


def parse(document: Any, settings: Settings, format: ImportFormat | None = None) -> ImportSpec:
    """Validate a source conversation. Every problem is a 422 naming where it is
    (`["body", "messages", 3, "content"]`; for ChatGPT the node: `["body", "mapping", id]`)."""
    chosen = format or detect_format(document)
    if chosen == "chatgpt":
        return _from_chatgpt(document, settings)
    model: type[ChatStoreDocument | PlainImport] = (
        ChatStoreDocument if chosen == "chat-store" else PlainImport
    )
    parsed = _validate(model, document, ["body"])
    _check_count(len(parsed.messages), settings)
    locs: list[Loc] = [["body", "messages", index] for index in range(len(parsed.messages))]
    messages = _message_documents(parsed.messages, locs, settings)
    if isinstance(parsed, ChatStoreDocument):
        fields = parsed.session
        _check_session(settings, fields.title, fields.metadata, ["body", "session"])
        _check_seqs(parsed.messages)
        return _spec(
            chosen,
            messages,
            title=fields.title,
            is_favorite=fields.is_favorite,
            status=fields.status,
            metadata=fields.metadata,
            workspace=fields.workspace,
            created_at=fields.created_at,
            updated_at=fields.updated_at,
            ended_at=fields.ended_at,
            last_message_at=fields.last_message_at,
            last_seq=fields.last_seq,
        )
    _check_session(settings, parsed.title, parsed.metadata, ["body"])
    return _spec(
        chosen,
        messages,
        title=parsed.title or _auto_title(messages),
        metadata=parsed.metadata,
        workspace=parsed.workspace,
    )


def _validate(model: type[M], value: Any, loc: Loc) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _invalid(exc, loc) from None


def _invalid(exc: ValidationError, loc: Loc) -> ValidationFailed:
    errors = [
        {"loc": [*loc, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    first = errors[0]
    failed = ValidationFailed(
        f"{'.'.join(map(str, first['loc']))}: {first['msg']}", cast(Loc, first["loc"])
    )
    failed.extra["errors"] = errors
    return failed


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_import_messages:
        raise ValidationFailed(
            f"an import holds at most {settings.max_import_messages} messages; this one {count}",
            ["body", "messages"],
        )


def _check_session(
    settings: Settings, title: str | None, metadata: dict[str, Any], loc: Loc
) -> None:
    limits.check_title(settings, title, [*loc, "title"])
    limits.check_metadata(settings, metadata, [*loc, "metadata"])


def _check_seqs(messages: Sequence[ImportedMessage]) -> None:
    """Seqs, when the source gives them, are kept: all of them, strictly increasing."""
    given = [message.seq is not None for message in messages]
    if not any(given):
        return
    previous = 0
    for index, message in enumerate(messages):
        if message.seq is None or message.seq <= previous:
            raise ValidationFailed(
                "seq must be given for every message or none, increasing",
                ["body", "messages", index, "seq"],
            )
        previous = message.seq


def _message_documents(
    messages: Sequence[ImportedMessage], locs: Sequence[Loc], settings: Settings
) -> list[dict[str, Any]]:
    documents = []
    for message, loc in zip(messages, locs, strict=True):
        for name in ("content", "partial_content"):
            text = getattr(message, name)
            if text is not None and len(text.encode("utf-8")) > settings.max_message_bytes:
                raise ValidationFailed(
                    f"{name} is over the limit of {settings.max_message_bytes} bytes of UTF-8",
                    [*loc, name],
                )
        limits.check_context(settings, message.context, [*loc, "context"])
        limits.check_metadata(settings, message.metadata, [*loc, "metadata"])
        documents.append(
            {
                "seq": message.seq,
                "role": message.role,
                "content": message.content,
                "partial_content": message.partial_content,
                "status": message.status,
                "error_message": message.error_message,
                "context": message.context,
                "metadata": message.metadata,
                "token_count": message.token_count,
                "model": message.model,
                "latency_ms": message.latency_ms,
                "created_at": export.time(message.created_at),
                "updated_at": export.time(message.updated_at),
                "completed_at": export.time(message.completed_at),
                "created_version": message.created_version,
                "version": message.version,
            }
        )
    return documents


def _auto_title(messages: Sequence[dict[str, Any]]) -> str | None:
    """As on append: the first user message names an untitled session."""
    for message in messages:
        if message["role"] == "user":
            text = message["content"] or message["partial_content"] or ""
            return chat_session_service.title_from_first_message(text)
    return None


def _spec(
    format: ImportFormat,
    messages: list[dict[str, Any]],
    *,
    title: str | None,
    metadata: dict[str, Any],
    workspace: Workspace | None,
    is_favorite: bool = False,
    status: str = "active",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    ended_at: datetime | None = None,
    last_message_at: datetime | None = None,
    last_seq: int | None = None,
) -> ImportSpec:
    session = {
        "title": title,
        "is_favorite": is_favorite,
        "status": status,
        "metadata": metadata,
        "workspace": workspace.model_dump() if workspace else None,
        "created_at": export.time(created_at),
        "updated_at": export.time(updated_at),
        "ended_at": export.time(ended_at),
        "last_message_at": export.time(last_message_at),
        "last_seq": last_seq,
    }
    # Canonical JSON of the conversation as validated (times in UTC, keys sorted), without ids
    # or the export time: the same conversation exported again has the same fingerprint.
    canonical = json.dumps(
        {"format": format, "session": session, "messages": messages},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return ImportSpec(
        format=format,
        title=title,
        is_favorite=is_favorite,
        status=status,
        metadata=metadata,
        workspace=workspace,
        created_at=created_at,
        updated_at=updated_at,
        ended_at=ended_at,
        last_message_at=last_message_at,
        last_seq=last_seq,
        messages=messages,
        fingerprint=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    )


# --- ChatGPT


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _chatgpt_text(content: Any) -> str:
    """The text of a ChatGPT message: its string parts joined (images and other attachments
    are dicts, left out), or the `text` of code and tool output."""
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n".join(part for part in parts if isinstance(part, str))
    text = content.get("text")
    return text if isinstance(text, str) else ""


def current_branch(mapping: dict[str, Any], current_node: Any) -> list[tuple[str, Any]]:
    """The conversation as the user last saw it: from `current_node` up the `parent` links to
    the root, in order. Branches left by edits and regenerations are not on it."""
    if not isinstance(current_node, str) or current_node not in mapping:
        raise ValidationFailed("current_node must name a node of mapping", ["body", "current_node"])
    branch: list[tuple[str, Any]] = []
    seen: set[str] = set()
    node_id: Any = current_node
    while node_id is not None:
        if not isinstance(node_id, str) or node_id not in mapping or node_id in seen:
            raise ValidationFailed(
                "the parent chain from current_node is broken or loops",
                ["body", "mapping", str(branch[-1][0]) if branch else current_node, "parent"],
            )
        seen.add(node_id)
        node = mapping[node_id]
        branch.append((node_id, node))
        node_id = node.get("parent") if isinstance(node, dict) else None
    branch.reverse()
    return branch


def _from_chatgpt(document: Any, settings: Settings) -> ImportSpec:
    if not isinstance(document, dict) or not isinstance(document.get("mapping"), dict):
        raise ValidationFailed("a ChatGPT conversation has a mapping object", ["body", "mapping"])
    branch = current_branch(document["mapping"], document.get("current_node"))
    items: list[ImportedMessage] = []
    locs: list[Loc] = []
    for node_id, node in branch:
        message = node.get("message") if isinstance(node, dict) else None
        if not isinstance(message, dict):
            continue  # the root and other nodes without a message
        loc: Loc = ["body", "mapping", node_id, "message"]
        text = _chatgpt_text(message.get("content"))
        if not text.strip():
            continue  # hidden system prompts, empty tool-call placeholders
        author = message.get("author")
        meta = message.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        content = message.get("content")
        value = {
            "role": author.get("role") if isinstance(author, dict) else None,
            "content": text,
            "model": meta.get("model_slug") if isinstance(meta.get("model_slug"), str) else None,
            "created_at": _epoch(message.get("create_time")),
            "metadata": {
                "chatgpt": {
                    "node_id": node_id,
                    "content_type": content.get("content_type")
                    if isinstance(content, dict)
                    else None,
                }
            },
        }
        items.append(_validate(ImportedMessage, value, loc))
        locs.append(loc)
    _check_count(len(items), settings)
    messages = _message_documents(items, locs, settings)
    title = document.get("title") if isinstance(document.get("title"), str) else None
    if title is not None:
        try:
            check_text(title)
        except ValueError as exc:
            raise ValidationFailed(str(exc), ["body", "title"]) from None
        limits.check_title(settings, title, ["body", "title"])
    conversation_id = document.get("conversation_id") or document.get("id")
    return _spec(
        "chatgpt",
        messages,
        title=title or _auto_title(messages),
        metadata={"source": {"format": "chatgpt", "conversation_id": conversation_id}},
        workspace=None,
        created_at=_epoch(document.get("create_time")),
        updated_at=_epoch(document.get("update_time")),
    )


# --- storing


async def import_document(
    ctx: RequestContext, document: Any, format: ImportFormat | None, key: str | None
) -> ImportResult:
    """Validate a source conversation and import it for the caller, once per Idempotency-Key
    (see import_chat_session)."""
    spec = parse(document, ctx.settings, format)

    async def produce() -> ImportResult:
        return await import_chat_session(ctx.db, ctx.principal.user_id, spec)

    source = ImportSource(format=spec.format, fingerprint=spec.fingerprint)
    create = idempotency.Create("import_chat_session", "", source, ImportResult)
    return await idempotency.run_once(ctx, key, create, produce)


def _result(row: ChatSession, spec: ImportSpec, *, created: bool) -> ImportResult:
    return ImportResult(
        session=ChatSessionRead.from_model(row),
        created=created,
        format=spec.format,
        message_count=row.message_count,
    )


async def import_chat_session(
    db: AsyncSession, user_id: uuid.UUID, spec: ImportSpec
) -> ImportResult:
    """Store a validated conversation as a session of `user_id`; the same conversation
    imported before answers that session (created=False)."""
    existing = await export_crud.find_imported(db, user_id, spec.fingerprint)
    if existing is not None:
        return _result(existing, spec, created=False)
    now = datetime.now(UTC)
    session_id = uuid7()
    created_at = spec.created_at or export.parse_time(
        spec.messages[0]["created_at"] if spec.messages else None
    )
    created_at = created_at or now
    rows = []
    for index, message in enumerate(spec.messages):
        # Seqs and change-feed versions of a chat-store export are kept; others count from 1.
        number = index + 1
        rows.append(
            export.message_row(
                message,
                message_id=uuid7(),
                session_id=session_id,
                user_id=user_id,
                seq=message["seq"] or number,
                created_version=message["created_version"] or number,
                version=message["version"] or message["created_version"] or number,
                default_time=created_at,
            )
        )
    last_message_at = spec.last_message_at or (
        max(message.created_at for message in rows) if rows else None
    )
    updated_at = spec.updated_at or last_message_at or created_at
    row = ChatSession(
        id=session_id,
        user_id=user_id,
        title=spec.title,
        is_favorite=spec.is_favorite,
        status=spec.status,
        metadata_=spec.metadata,
        workspace_repo=spec.workspace.repo if spec.workspace else None,
        workspace_branch=spec.workspace.branch if spec.workspace else None,
        workspace_path=spec.workspace.path if spec.workspace else None,
        message_count=len(rows),
        total_tokens=sum(message.token_count or 0 for message in rows),
        last_seq=max([spec.last_seq or 0, *(message.seq for message in rows)]),
        history_version=max([0, *(message.version for message in rows)]),
        updated_version=0,
        last_message_at=last_message_at,
        # An import is activity: an old conversation brought in is not archived or purged as
        # idle the next hour.
        last_activity_at=now,
        created_at=created_at,
        updated_at=updated_at,
        ended_at=(spec.ended_at or updated_at) if spec.status == "ended" else None,
        archived_at=None,
        archive_key=None,
        restored_at=None,
        source_fingerprint=spec.fingerprint,
    )
    values = {column: getattr(row, key) for key, column in _SESSION_COLUMNS}
    if not await export_crud.insert_imported_session(db, values):
        # Imported concurrently by another request, which committed first.
        found = await export_crud.find_imported(db, user_id, spec.fingerprint)
        assert found is not None
        return _result(found, spec, created=False)
    await message_crud.insert_messages(db, rows)
    return _result(row, spec, created=True)


# --- files (chat-store import)


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
