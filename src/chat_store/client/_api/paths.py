"""What the API methods share: the types of their arguments and the paths they call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

from chat_store.client._core import API_PREFIX, path_id
from chat_store.client.models import Workspace

ChatSessionStatus = Literal["active", "ended"]
Order = Literal["asc", "desc"]
WorkspaceInput = Workspace | Mapping[str, str | None]

SESSIONS = f"{API_PREFIX}/sessions"


def chat_session_path(session_id: uuid.UUID | str) -> str:
    return f"{SESSIONS}/{path_id(session_id)}"


def messages_path(session_id: uuid.UUID | str) -> str:
    return f"{chat_session_path(session_id)}/messages"


def message_path(session_id: uuid.UUID | str, message_id: uuid.UUID | str) -> str:
    return f"{messages_path(session_id)}/{path_id(message_id)}"


def idempotency_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}
