"""Import bodies (chat-store/1, ChatGPT, plain) and the import answer."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from chat_store.schemas.chat_sessions import (
    ChatSessionRead,
    ChatSessionStatus,
    SystemPrompt,
    Workspace,
)
from chat_store.schemas.common import (
    INT32_MAX,
    InputDatetime,
    InputModel,
    Metadata,
    OutputModel,
    Title,
)
from chat_store.schemas.messages import MessageCreate, check_tool_call_id

ImportFormat = Literal["chat-store", "chatgpt", "plain"]

# The largest seq or version an import keeps: half the column's range, so that the session it
# makes has room for its next messages and changes (each takes the next seq or version).
IMPORTED_MAX = INT32_MAX // 2


class ImportedMessage(MessageCreate):
    """A message as an export writes it, or as a plain import gives it (only `role` and the
    text are needed). `id` is read and not kept: ids are global, an import gets new ones."""

    seq: int | None = Field(default=None, ge=1, le=IMPORTED_MAX)
    created_at: InputDatetime | None = None
    updated_at: InputDatetime | None = None
    completed_at: InputDatetime | None = None
    created_version: int | None = Field(default=None, ge=0, le=IMPORTED_MAX)
    version: int | None = Field(default=None, ge=0, le=IMPORTED_MAX)

    @field_validator("tool_call_id")
    @classmethod
    def _answer_of_a_tool(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Exports made before tool calls were fields hold tool messages without one.
        return check_tool_call_id(value, info.data.get("role"), required=False)


class ImportedSessionFields(InputModel):
    """The `session` object of a chat-store/1 document. Counters are recomputed from the
    messages; `id` is not kept."""

    id: uuid.UUID | None = None
    title: Title | None = None
    is_favorite: bool = False
    status: ChatSessionStatus = "active"
    metadata: Metadata = Field(default_factory=dict)
    system_prompt: SystemPrompt | None = None
    workspace: Workspace | None = None
    message_count: int | None = Field(default=None, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)
    last_seq: int | None = Field(default=None, ge=0, le=IMPORTED_MAX)
    last_message_at: InputDatetime | None = None
    created_at: InputDatetime | None = None
    updated_at: InputDatetime | None = None
    ended_at: InputDatetime | None = None


class ChatStoreDocument(InputModel):
    """A chat-store/1 export of one session (`GET /sessions/{id}/export?format=json`)."""

    format: Literal["chat-store/1"]
    exported_at: InputDatetime | None = None
    session: ImportedSessionFields
    messages: list[ImportedMessage]


class PlainImport(InputModel):
    """`{"title"?, "system_prompt"?, "messages": [{"role", "content", ...}]}`."""

    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)
    system_prompt: SystemPrompt | None = None
    workspace: Workspace | None = None
    messages: list[ImportedMessage]


class ImportSource(InputModel):
    """What an Idempotency-Key's replay is matched on: the source conversation as validated."""

    format: ImportFormat
    fingerprint: str


class ImportResult(OutputModel):
    object: Literal["session.import"] = "session.import"
    session: ChatSessionRead
    created: bool = Field(
        description="false: this source conversation was imported before; its session is "
        "answered (200) and nothing is written."
    )
    format: ImportFormat
    message_count: int


# Shown in the OpenAPI document: the three shapes the import takes.
IMPORT_EXAMPLES: dict[str, Any] = {
    "plain": {
        "summary": "Plain messages",
        "value": {
            "title": "Billing flake",
            "messages": [
                {"role": "user", "content": "Why does test_billing fail on CI?"},
                {"role": "assistant", "content": "The fixture uses a fixed clock."},
            ],
        },
    },
    "chatgpt": {
        "summary": "One conversation of ChatGPT's conversations.json",
        "value": {
            "title": "Billing flake",
            "create_time": 1764163200.0,
            "current_node": "b",
            "mapping": {
                "root": {"id": "root", "message": None, "parent": None, "children": ["a"]},
                "a": {
                    "id": "a",
                    "parent": "root",
                    "children": ["b"],
                    "message": {
                        "author": {"role": "user"},
                        "create_time": 1764163200.0,
                        "content": {"content_type": "text", "parts": ["Why does it fail?"]},
                    },
                },
                "b": {
                    "id": "b",
                    "parent": "a",
                    "children": [],
                    "message": {
                        "author": {"role": "assistant"},
                        "create_time": 1764163205.0,
                        "content": {"content_type": "text", "parts": ["A fixed clock."]},
                        "metadata": {"model_slug": "gpt-4o"},
                    },
                },
            },
        },
    },
    "chat-store": {
        "summary": "A chat-store/1 export (GET /sessions/{id}/export)",
        "value": {
            "format": "chat-store/1",
            "session": {"title": "Billing flake", "metadata": {}},
            "messages": [
                {
                    "seq": 1,
                    "role": "user",
                    "content": "Why does test_billing fail on CI?",
                    "status": "complete",
                    "created_at": "2026-11-26T13:55:53.349555Z",
                }
            ],
        },
    },
}
