"""The formats an import reads: a chat-store/1 export, a plain list of messages, a ChatGPT
conversation (imports/chatgpt.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chat_store.errors import ValidationFailed
from chat_store.schemas.export import ChatStoreDocument, ImportedMessage, ImportFormat, PlainImport
from chat_store.services.imports.chatgpt import from_chatgpt
from chat_store.services.imports.spec import (
    ImportSpec,
    Loc,
    auto_title,
    check_count,
    check_session,
    make_spec,
    message_documents,
    validate,
)
from chat_store.settings import Settings


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
        return from_chatgpt(document, settings)
    model: type[ChatStoreDocument | PlainImport] = (
        ChatStoreDocument if chosen == "chat-store" else PlainImport
    )
    parsed = validate(model, document, ["body"])
    check_count(len(parsed.messages), settings)
    locs: list[Loc] = [["body", "messages", index] for index in range(len(parsed.messages))]
    messages = message_documents(parsed.messages, locs, settings)
    if isinstance(parsed, ChatStoreDocument):
        fields = parsed.session
        check_session(settings, fields.title, fields.metadata, ["body", "session"])
        _check_seqs(parsed.messages)
        kept = {name: value for name, value in fields if name not in _NOT_KEPT}
        return make_spec(chosen, messages, **kept)
    check_session(settings, parsed.title, parsed.metadata, ["body"])
    _check_seqs(parsed.messages)
    return make_spec(
        chosen,
        messages,
        title=parsed.title or auto_title(messages),
        metadata=parsed.metadata,
        workspace=parsed.workspace,
        system_prompt=parsed.system_prompt,
    )


# The session fields of a chat-store/1 document that are not imported: the counters are
# recomputed from the messages, the id is not kept; every other one is, under its own name.
_NOT_KEPT = frozenset({"id", "message_count", "total_tokens"})


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
