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

from chat_store.client._api import ChatStoreApi, ExportFormat
from chat_store.client._core import UNSET, Call
from chat_store.client._transports import AsyncTransport, SyncTransport
from chat_store.client.errors import (
    BadRequestError,
    ChatStoreError,
    ConflictError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chat_store.client.models import (
    ApiKey,
    ApiKeyCreated,
    ChatSession,
    ChatTurn,
    ContextWindow,
    Deleted,
    Health,
    Message,
    MessageWithLength,
    Page,
    Readiness,
    ResumePoint,
    SearchMessage,
    SearchPage,
    SearchResult,
    SearchSession,
    StreamDelta,
    StreamDone,
    StreamReset,
    StreamStale,
    TokenPair,
    ToolCall,
    User,
    Workspace,
)


class ChatStoreClient(SyncTransport, ChatStoreApi):
    """Blocking client; use it as a context manager, or call `close()`."""


class AsyncChatStoreClient(AsyncTransport, ChatStoreApi):
    """Async client; use it with `async with`, or call `aclose()`."""


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
    "ChatTurn",
    "ConflictError",
    "ContextWindow",
    "Deleted",
    "ExportFormat",
    "ForbiddenError",
    "Health",
    "Message",
    "MessageWithLength",
    "MethodNotAllowedError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "RateLimitedError",
    "Readiness",
    "ResumePoint",
    "SearchMessage",
    "SearchPage",
    "SearchResult",
    "SearchSession",
    "ServerError",
    "StreamDelta",
    "StreamDone",
    "StreamReset",
    "StreamStale",
    "TokenPair",
    "ToolCall",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "User",
    "ValidationError",
    "Workspace",
]
