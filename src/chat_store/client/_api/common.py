"""What the API methods share: the types of their arguments, the options of the lists and of
the changes they send, and the paths they call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal, TypedDict

from chat_store.client._core import API_PREFIX, Unset, path_id
from chat_store.client.models import MessageRole, MessageStatus, Workspace

Id = uuid.UUID | str  # an id, as a UUID or as its text
ChatSessionStatus = Literal["active", "ended"]
Order = Literal["asc", "desc"]
WorkspaceInput = Workspace | Mapping[str, str | None]

SESSIONS = f"{API_PREFIX}/sessions"


class PageOptions(TypedDict, total=False):
    """Which page of a list: its size, its order, and the item it continues after or before."""

    limit: int | None
    order: Order | None
    after: Id | None
    before: Id | None


class SessionFilters(TypedDict, total=False):
    """What a list of sessions is narrowed to, and its order."""

    order: Order | None
    favorite: bool | None
    status: ChatSessionStatus | None
    q: str | None  # title contains
    repo: str | None
    updated_after: datetime | None
    archived: bool | None


class SessionPage(PageOptions, SessionFilters, total=False):
    cursor: str | None  # a page's next_cursor


class MessagePage(PageOptions, total=False):
    after_seq: int | None
    before_seq: int | None


class SearchOptions(TypedDict, total=False):
    """A search's page and filters. `after`/`before`: a time with an offset, or a date (the
    start of that day, UTC)."""

    limit: int | None
    cursor: str | None
    session_id: Id | None
    role: MessageRole | None
    repo: str | None
    favorite: bool | None
    status: ChatSessionStatus | None
    after: datetime | date | None
    before: datetime | date | None


class SessionChanges(TypedDict, total=False):
    """A session's fields to change; the others are left alone (None clears the title, the
    workspace or the system prompt)."""

    title: str | Unset | None
    is_favorite: bool | Unset
    metadata: Mapping[str, Any] | Unset
    workspace: WorkspaceInput | Unset | None
    status: ChatSessionStatus | Unset
    system_prompt: str | Unset | None


class Completion(TypedDict, total=False):
    """What a message's completion may set besides its status."""

    content: str | Unset
    token_count: int | Unset | None
    latency_ms: int | Unset | None


class MessageChanges(Completion, total=False):
    """A message's fields to change; the others are left alone."""

    status: MessageStatus | Unset
    partial_content: str | Unset
    error_message: str | Unset | None
    metadata: Mapping[str, Any] | Unset


def chat_session_path(session_id: Id) -> str:
    return f"{SESSIONS}/{path_id(session_id)}"


def messages_path(session_id: Id) -> str:
    return f"{chat_session_path(session_id)}/messages"


def message_path(session_id: Id, message_id: Id) -> str:
    return f"{messages_path(session_id)}/{path_id(message_id)}"


def idempotency_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}
