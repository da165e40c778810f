"""A ChatGPT conversation (an item of conversations.json): the branch the user last saw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chat_store.errors import ValidationFailed
from chat_store.schemas.common import check_text
from chat_store.schemas.export import ImportedMessage
from chat_store.services import limits
from chat_store.services.imports.spec import (
    ImportSpec,
    Loc,
    auto_title,
    check_count,
    make_spec,
    message_documents,
    validate,
)
from chat_store.settings import Settings

_CONVERSATION_ID_MAX_CHARS = 200


def _epoch(value: Any, loc: Loc) -> datetime | None:
    """A ChatGPT time (seconds since 1970), None if there is none; one beyond the years 1 to
    9999 (or not finite) is refused where it is."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationFailed(
            "a time in seconds since 1970 within the years 1 to 9999", loc
        ) from None


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


def _conversation_id(document: dict[str, Any]) -> str | None:
    """The conversation's id, kept in the session's metadata: a string (ChatGPT's are UUIDs),
    else none. Stored unchecked, a NaN or a lone surrogate made the session one that no export
    could write."""
    for name in ("conversation_id", "id"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            continue
        try:
            check_text(value)
        except ValueError as exc:
            raise ValidationFailed(str(exc), ["body", name]) from None
        if len(value) > _CONVERSATION_ID_MAX_CHARS:
            raise ValidationFailed(
                f"{name} is at most {_CONVERSATION_ID_MAX_CHARS} characters", ["body", name]
            )
        return value
    return None


def from_chatgpt(document: Any, settings: Settings) -> ImportSpec:
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
        meta = message.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("is_visually_hidden_from_conversation") is True:
            continue  # what ChatGPT never showed: its system prompt, the custom instructions
        text = _chatgpt_text(message.get("content"))
        if not text.strip():
            continue  # empty tool-call placeholders
        author = message.get("author")
        content = message.get("content")
        value = {
            "role": author.get("role") if isinstance(author, dict) else None,
            "content": text,
            "model": meta.get("model_slug") if isinstance(meta.get("model_slug"), str) else None,
            "created_at": _epoch(message.get("create_time"), [*loc, "create_time"]),
            "metadata": {
                "chatgpt": {
                    "node_id": node_id,
                    "content_type": content.get("content_type")
                    if isinstance(content, dict)
                    else None,
                }
            },
        }
        items.append(validate(ImportedMessage, value, loc))
        locs.append(loc)
    check_count(len(items), settings)
    messages = message_documents(items, locs, settings)
    title = document.get("title") if isinstance(document.get("title"), str) else None
    if title is not None:
        try:
            check_text(title)
        except ValueError as exc:
            raise ValidationFailed(str(exc), ["body", "title"]) from None
        limits.check_title(settings, title, ["body", "title"])
    metadata = {"source": {"format": "chatgpt", "conversation_id": _conversation_id(document)}}
    limits.check_metadata(settings, metadata, ["body", "conversation_id"])
    return make_spec(
        "chatgpt",
        messages,
        title=title or auto_title(messages),
        metadata=metadata,
        workspace=None,
        created_at=_epoch(document.get("create_time"), ["body", "create_time"]),
        updated_at=_epoch(document.get("update_time"), ["body", "update_time"]),
    )
