from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from chat_store.schemas.common import (
    InputModel,
    Metadata,
    OutputModel,
    RagContext,
    SafeStr,
    Seq,
    examples,
)

Role = Literal["user", "assistant", "system", "tool"]
MessageStatus = Literal["pending", "in_progress", "complete", "failed", "cancelled"]
OPEN_STATUSES: frozenset[str] = frozenset({"pending", "in_progress"})
# A function name as the OpenAI chat API takes it.
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TOOL_CALL_ID_MAX_CHARS = 200
# Calls in one message (the OpenAI API's limit on the tools of one request).
MAX_TOOL_CALLS = 128


class ToolCall(InputModel):
    """A call of one of the client's functions, as the model asked for it. The client runs
    it and appends the result as a `tool` message whose tool_call_id is this id."""

    id: SafeStr = Field(min_length=1, max_length=TOOL_CALL_ID_MAX_CHARS, examples=["call_7Qw1"])
    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["run_tests"])
    arguments: SafeStr = Field(
        description="The arguments as the model wrote them: a string, normally of JSON, kept "
        "as sent (up to MAX_MESSAGE_BYTES).",
        examples=['{"path": "tests/test_billing.py"}'],
    )


ToolCallId = Annotated[
    SafeStr, Field(min_length=1, max_length=TOOL_CALL_ID_MAX_CHARS, examples=["call_7Qw1"])
]


def check_tool_calls(value: list[ToolCall] | None, role: str | None) -> list[ToolCall] | None:
    """Only an assistant message calls tools, each call with an id of its own."""
    if value is None or role is None:
        return value
    if role != "assistant":
        raise ValueError("only an assistant message carries tool_calls")
    seen: set[str] = set()
    for call in value:
        if call.id in seen:
            raise ValueError(f"tool call ids differ within a message; {call.id!r} is repeated")
        seen.add(call.id)
    return value


def check_tool_call_id(value: str | None, role: str | None, *, required: bool) -> str | None:
    """Only a tool message answers a call; with `required`, every tool message does."""
    if role is None:
        return value
    if role != "tool" and value is not None:
        raise ValueError("only a tool message carries tool_call_id")
    if role == "tool" and value is None and required:
        raise ValueError("a tool message needs tool_call_id: the id of the call it answers")
    return value


class MessageCreate(InputModel):
    id: uuid.UUID | None = Field(default=None, description="Client-chosen id; must be unused.")
    role: Role = Field(examples=["user"])
    content: SafeStr | None = Field(default=None, examples=["Why does this test fail?"])
    partial_content: SafeStr | None = Field(
        default=None, description="Text so far of a message created pending or in_progress."
    )
    status: MessageStatus = "complete"
    error_message: SafeStr | None = Field(default=None, max_length=10_000)
    context: RagContext | None = Field(
        default=None,
        description="RAG data: retrieved documents, citations, reranker (up to "
        "MAX_MESSAGE_BYTES of JSON).",
    )
    metadata: Metadata = Field(default_factory=dict)
    token_count: int | None = Field(default=None, ge=0, le=100_000_000)
    model: SafeStr | None = Field(default=None, max_length=200, examples=["gpt-4o"])
    latency_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    tool_calls: list[ToolCall] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOOL_CALLS,
        description="An assistant message's calls of the client's tools (docs/api.md).",
    )
    tool_call_id: ToolCallId | None = Field(
        default=None,
        validate_default=True,
        description="A tool message's answer: the id of the call it answers, a call of an "
        "earlier assistant message of the session. Required for role `tool`.",
    )

    @field_validator("tool_calls")
    @classmethod
    def _calls_of_an_assistant(
        cls, value: list[ToolCall] | None, info: ValidationInfo
    ) -> list[ToolCall] | None:
        return check_tool_calls(value, info.data.get("role"))

    @field_validator("tool_call_id")
    @classmethod
    def _answer_of_a_tool(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_tool_call_id(value, info.data.get("role"), required=True)

    @model_validator(mode="after")
    def _content_matches_status(self) -> MessageCreate:
        if self.status == "complete":
            if self.partial_content is not None:
                raise ValueError("a complete message has content, not partial_content")
            if self.content is None:
                raise ValueError("a complete message needs content (it may be empty)")
        elif self.content is not None:
            raise ValueError(
                f"a {self.status} message keeps its text in partial_content; content is set "
                "when it completes"
            )
        if self.error_message is not None and self.status not in {"failed", "cancelled"}:
            raise ValueError("error_message is only for failed or cancelled messages")
        return self


class MessageAppend(MessageCreate):
    expected_last_seq: Seq | None = Field(
        default=None,
        description="Append only if the session's last seq is this (else 409 seq_conflict).",
    )


class MessageBatchCreate(InputModel):
    model_config = examples(
        {
            "messages": [
                {"role": "user", "content": "Why does test_billing fail on CI?"},
                {
                    "role": "assistant",
                    "content": "The fixture clock is frozen at 2024-01-01; the invoice is dated "
                    "today.",
                    "model": "gpt-4o",
                    "token_count": 17,
                },
            ]
        }
    )

    messages: list[MessageCreate] = Field(min_length=1)
    expected_last_seq: Seq | None = None


class MessageUpdate(InputModel):
    model_config = examples(
        {
            "status": "complete",
            "content": "Pass now= to make_invoice so the test does not read the clock.",
            "token_count": 14,
            "latency_ms": 2310,
        },
        {"status": "failed", "error_message": "The model provider timed out"},
    )

    status: MessageStatus | None = None
    content: SafeStr | None = None
    partial_content: SafeStr | None = None
    error_message: SafeStr | None = Field(default=None, max_length=10_000)
    metadata: Metadata | None = None
    token_count: int | None = Field(default=None, ge=0, le=100_000_000)
    latency_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    tool_calls: list[ToolCall] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOOL_CALLS,
        description="An assistant message's tool calls (set when its writer completes it); "
        "null clears them.",
    )

    @field_validator("tool_calls")
    @classmethod
    def _distinct_ids(cls, value: list[ToolCall] | None) -> list[ToolCall] | None:
        # Whose message it is is known to the service (only an assistant's takes calls).
        return check_tool_calls(value, "assistant")

    @model_validator(mode="after")
    def _no_null_metadata(self) -> MessageUpdate:
        for name in ("status", "metadata", "content", "partial_content"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null (send an empty string to clear text)")
        if self.content is not None and self.partial_content is not None:
            raise ValueError("give content or partial_content, not both")
        return self


class DeltaAppend(InputModel):
    model_config = examples({"delta": " the fixture clock", "offset": 42})

    delta: SafeStr = Field(min_length=1, examples=["Hello"])
    offset: int = Field(
        ge=0,
        le=100_000_000,
        description="Length in code points of the text the writer believes is stored.",
    )


class MessageRead(OutputModel):
    id: uuid.UUID
    object: Literal["message"] = "message"
    session_id: uuid.UUID
    seq: int = Field(description="Its place in the session: 1, 2, 3, ... never reused.")
    role: Role
    content: str | None = Field(description="The text of a complete message; null until then.")
    partial_content: str | None = Field(
        description="The text streamed so far while the message is open (kept when it fails "
        "or is cancelled); null once it is complete."
    )
    status: MessageStatus
    error_message: str | None = Field(description="Why a failed or cancelled answer stopped.")
    context: dict[str, Any] | None = Field(description="RAG data, as the writer gave it.")
    metadata: dict[str, Any]
    token_count: int | None = Field(description="Its tokens, as the writer counted them.")
    model: str | None = Field(description="The model that wrote it.")
    latency_ms: int | None = Field(description="How long it took, as the writer measured it.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="An assistant message's calls of the client's tools."
    )
    tool_call_id: str | None = Field(
        default=None, description="A tool message's answer: the id of the call it answers."
    )
    stale: bool = Field(
        default=False,
        description="Open (pending/in_progress) with no change for STALE_STREAM_SECONDS: "
        "its writer went silent; resume picks it up.",
    )


class MessageWithLength(MessageRead):
    length: int = Field(description="Length in code points of the streamed text now stored.")


class ResumePoint(OutputModel):
    message: MessageRead
    offset: int = Field(description="Length of the stored partial text: append from here.")
    history: list[MessageRead]


class ContextWindow(OutputModel):
    object: Literal["context"] = "context"
    data: list[MessageRead]
    token_count: int
    truncated: bool
    omitted_count: int


class ForkCreate(InputModel):
    model_config = examples({"message_id": "0b8f5c2e-4a1d-4c7e-9f3b-6d2a1e9c7f40"})

    message_id: uuid.UUID = Field(description="Copy the messages up to and including this one.")
