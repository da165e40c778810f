"""A source conversation as validated: what the imported session will hold, and its
fingerprint; the checks every format goes through."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from chat_store.errors import ValidationFailed
from chat_store.schemas.chat_sessions import Workspace
from chat_store.schemas.export import ImportedMessage, ImportFormat
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import export, limits
from chat_store.settings import Settings

Loc = list[str | int]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ImportSpec:
    """A source conversation, validated and reduced to what the session will hold."""

    format: ImportFormat
    title: str | None
    is_favorite: bool
    status: str
    metadata: dict[str, Any]
    system_prompt: str | None
    workspace: Workspace | None
    created_at: datetime | None
    updated_at: datetime | None
    ended_at: datetime | None
    last_message_at: datetime | None
    last_seq: int | None
    # Message documents (the export's message shape, times in UTC), in order.
    messages: list[dict[str, Any]]
    fingerprint: str


def validate(model: type[M], value: Any, loc: Loc) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid(exc, loc) from None


def invalid(exc: ValidationError, loc: Loc) -> ValidationFailed:
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


def check_count(count: int, settings: Settings) -> None:
    if count > settings.max_import_messages:
        raise ValidationFailed(
            f"an import holds at most {settings.max_import_messages} messages; this one {count}",
            ["body", "messages"],
        )


def check_session(
    settings: Settings, title: str | None, metadata: dict[str, Any], loc: Loc
) -> None:
    limits.check_title(settings, title, [*loc, "title"])
    limits.check_metadata(settings, metadata, [*loc, "metadata"])


def message_documents(
    messages: Sequence[ImportedMessage], locs: Sequence[Loc], settings: Settings
) -> list[dict[str, Any]]:
    documents = []
    for message, loc in zip(messages, locs, strict=True):
        texts: list[tuple[str | None, Loc]] = [
            (message.content, [*loc, "content"]),
            (message.partial_content, [*loc, "partial_content"]),
        ]
        texts += [
            (call.arguments, [*loc, "tool_calls", index, "arguments"])
            for index, call in enumerate(message.tool_calls or ())
        ]
        for text, at in texts:
            if text is not None and len(text.encode("utf-8")) > settings.max_message_bytes:
                raise ValidationFailed(
                    f"{at[-1]} is over the limit of {settings.max_message_bytes} bytes of UTF-8",
                    at,
                )
        limits.check_context(settings, message.context, [*loc, "context"])
        # An exported answer's metadata may hold the service's keys on top of its client's.
        limits.check_metadata(
            settings, message.metadata, [*loc, "metadata"], with_service_keys=True
        )
        document: dict[str, Any] = {
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
        # Only when present: a conversation without tool calls keeps the fingerprint it had
        # before messages had these fields (imported again, it is found, not doubled).
        if message.tool_calls:
            document["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.tool_call_id is not None:
            document["tool_call_id"] = message.tool_call_id
        documents.append(document)
    return documents


def auto_title(messages: Sequence[dict[str, Any]]) -> str | None:
    """As on append: the first user message with a line of text names an untitled session."""
    return chat_session_service.title_from_user_texts(
        message["content"] or message["partial_content"] or ""
        for message in messages
        if message["role"] == "user"
    )


def make_spec(
    format: ImportFormat,
    messages: list[dict[str, Any]],
    *,
    title: str | None,
    metadata: dict[str, Any],
    workspace: Workspace | None,
    system_prompt: str | None = None,
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
    # Only when set: a session without one keeps the fingerprint it had before sessions had
    # a system prompt (imported again, it is found, not doubled).
    if system_prompt is not None:
        session["system_prompt"] = system_prompt
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
        system_prompt=system_prompt,
        workspace=workspace,
        created_at=created_at,
        updated_at=updated_at,
        ended_at=ended_at,
        last_message_at=last_message_at,
        last_seq=last_seq,
        messages=messages,
        fingerprint=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    )
