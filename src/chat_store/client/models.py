"""What the service answers, as typed models.

These are the client's own models, not the server's schemas: they ignore fields they do not know,
so an older client keeps working against a newer server that answers with more. A test keeps their
fields in step with the server's read schemas.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(Model):
    id: uuid.UUID
    object: Literal["user"] = "user"
    email: str
    display_name: str | None = None
    created_at: datetime
    updated_at: datetime


class TokenPair(Model):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class ApiKey(Model):
    id: uuid.UUID
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret, shown this once only.")


class Workspace(Model):
    repo: str | None = None
    branch: str | None = None
    path: str | None = None


class ChatSession(Model):
    id: uuid.UUID
    object: Literal["session"] = "session"
    title: str | None = None
    is_favorite: bool
    status: Literal["active", "ended"]
    metadata: dict[str, Any] = Field(default_factory=dict)
    workspace: Workspace | None = None
    system_prompt: str | None = None
    message_count: int
    total_tokens: int
    last_message_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    archived_at: datetime | None = None


T = TypeVar("T")


class Page(Model, Generic[T]):
    """One page of a keyset-paginated list. The next one: `cursor=next_cursor` where the list
    gives one (sessions), else `after=last_id`."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: uuid.UUID | None = None
    last_id: uuid.UUID | None = None
    has_more: bool
    next_cursor: str | None = None


class ClaimResult(Model):
    object: Literal["claim"] = "claim"
    client_id: uuid.UUID
    sessions_moved: int


class Deleted(Model):
    id: uuid.UUID
    object: str
    deleted: bool


class Health(Model):
    status: str
    version: str


class Readiness(Model):
    """`status` is "ok" when the database answers at the migration head."""

    status: Literal["ok", "unavailable"]
    database: str
    cache: str

    @property
    def ready(self) -> bool:
        return self.status == "ok"


MessageRole = Literal["user", "assistant", "system", "tool"]
MessageStatus = Literal["pending", "in_progress", "complete", "failed", "cancelled"]


class ToolCall(Model):
    """A call of one of the client's functions, as the model asked for it; answer it with
    `append_tool_result(session_id, call.id, result)`."""

    id: str
    name: str
    arguments: str  # as the model wrote it, normally JSON

    def parsed_arguments(self) -> Any:
        """The arguments as JSON (raises ValueError when the model wrote no valid JSON)."""
        return json.loads(self.arguments)


class Message(Model):
    id: uuid.UUID
    object: Literal["message"] = "message"
    session_id: uuid.UUID
    seq: int
    role: MessageRole
    content: str | None = None
    partial_content: str | None = None
    status: MessageStatus
    error_message: str | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    token_count: int | None = None
    model: str | None = None
    latency_ms: int | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    stale: bool = False

    @property
    def text(self) -> str:
        """The message's text: `content` once complete, the streamed text before."""
        return self.content if self.content is not None else (self.partial_content or "")


class MessageWithLength(Message):
    length: int


class ResumePoint(Model):
    message: Message
    offset: int
    history: list[Message]


class ContextWindow(Model):
    object: Literal["context"] = "context"
    data: list[Message]
    token_count: int
    truncated: bool
    omitted_count: int


class ChatTurn(Model):
    """A chat turn the service answers: the user's message and the answer it generates."""

    object: Literal["chat.turn"] = "chat.turn"
    # None: a turn sent without content, answering the stored history (after tool results).
    user_message: Message | None
    assistant_message: Message


class SearchSession(Model):
    id: uuid.UUID
    title: str | None = None


class SearchMessage(Model):
    id: uuid.UUID
    seq: int
    role: MessageRole
    created_at: datetime


class SearchResult(Model):
    """One hit: a message (or, with `message` None, the session's title) and an excerpt."""

    object: Literal["search_result"] = "search_result"
    session: SearchSession
    message: SearchMessage | None = None
    snippet: str
    highlights: list[tuple[int, int]] = Field(default_factory=list)
    rank: float

    @property
    def matches(self) -> list[str]:
        """The matched pieces of `snippet`, in order."""
        return [self.snippet[start:end] for start, end in self.highlights]


class SearchPage(Model):
    """One page of hits, best first; pass `next_cursor` as `cursor` for the next one."""

    object: Literal["list"] = "list"
    data: list[SearchResult]
    has_more: bool
    next_cursor: str | None = None


@dataclass(frozen=True)
class StreamDelta:
    """Text appended to a followed message; `offset` is the stored length after it."""

    delta: str
    offset: int


@dataclass(frozen=True)
class StreamReset:
    """The followed message's text was replaced by its writer (not extended): `text` is the
    whole text now, in place of what was received so far; `offset` is its length."""

    text: str
    offset: int


@dataclass(frozen=True)
class StreamStale:
    """The followed message is still open but has not changed since `since`: its writer went
    silent. `length` code points are stored; following goes on, and a writer that resumes or
    takes over continues it with more deltas."""

    message_id: uuid.UUID
    seq: int
    status: str
    length: int
    since: datetime


@dataclass(frozen=True)
class StreamDone:
    """The followed message reached a final status; `length` is the final text length."""

    status: str
    error_message: str | None
    length: int
