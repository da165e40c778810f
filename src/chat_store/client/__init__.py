"""Typed Python client for chat-store, blocking (`ChatStoreClient`) and async
(`AsyncChatStoreClient`), with the same methods on both.

    from chat_store.client import ChatStoreClient

    with ChatStoreClient("http://127.0.0.1:8000") as client:
        client.login("ada@example.com", "correct horse battery")
        session = client.create_session(title="Refactor billing")
        for item in client.iter_sessions(favorite=True):
            print(item.id, item.title)

Credentials: `api_key=` (sent as X-API-Key), or the tokens from `login()` (sent as a bearer token
and refreshed once, by themselves, when the service answers 401). Error answers raise
`ChatStoreError` subclasses carrying `status`, `code`, `detail` and the whole problem body.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Unpack

from chat_store.client._api import ChatStoreApi
from chat_store.client._core import UNSET, Call
from chat_store.client._follow import FollowOptions, follow_async, follow_sync
from chat_store.client._transports import AsyncTransport, SyncTransport
from chat_store.client.errors import (
    BadRequestError,
    ChatStoreError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    ValidationError,
)
from chat_store.client.models import (
    ApiKey,
    ApiKeyCreated,
    ChatSession,
    ContextWindow,
    Deleted,
    Health,
    Message,
    MessageWithLength,
    Page,
    Readiness,
    ResumePoint,
    StreamDelta,
    StreamDone,
    TokenPair,
    User,
    Workspace,
)


class ChatStoreClient(SyncTransport, ChatStoreApi):
    """Blocking client; use it as a context manager, or call `close()`."""

    def follow(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        **options: Unpack[FollowOptions],
    ) -> Iterator[StreamDelta | StreamDone]:
        """Follow a message's text live: `StreamDelta`s from `offset`, then one `StreamDone`.
        A dropped connection is resumed by itself from the last offset received."""
        return follow_sync(self, session_id, message_id, **options)


class AsyncChatStoreClient(AsyncTransport, ChatStoreApi):
    """Async client; use it with `async with`, or call `aclose()`."""

    def follow(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        **options: Unpack[FollowOptions],
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """As ChatStoreClient.follow, iterated with `async for`."""
        return follow_async(self, session_id, message_id, **options)


__all__ = [
    "UNSET",
    "ApiKey",
    "ApiKeyCreated",
    "AsyncChatStoreClient",
    "BadRequestError",
    "Call",
    "ChatSession",
    "ChatStoreClient",
    "ChatStoreError",
    "ConflictError",
    "ContextWindow",
    "Deleted",
    "ForbiddenError",
    "Health",
    "Message",
    "MessageWithLength",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "RateLimitedError",
    "Readiness",
    "ResumePoint",
    "ServerError",
    "StreamDelta",
    "StreamDone",
    "TokenPair",
    "UnauthorizedError",
    "User",
    "ValidationError",
    "Workspace",
]
