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
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from chat_store.client._api import ChatStoreApi, ExportFormat, chat_body, export_call
from chat_store.client._chat import ChatItem, chat_async, chat_sync
from chat_store.client._core import UNSET, Call
from chat_store.client._follow import follow_async, follow_sync
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
    TokenPair,
    User,
    Workspace,
)


class ChatStoreClient(SyncTransport, ChatStoreApi):
    """Blocking client; use it as a context manager, or call `close()`."""

    def iter_export(
        self, session_id: uuid.UUID | str | None = None, *, export_format: ExportFormat = "json"
    ) -> Iterator[bytes]:
        """A session's export in `export_format` (docs/export-format.md), or with no session
        everything the caller owns as JSONL, in chunks as the service sends them."""
        with self._stream(export_call(session_id, export_format)) as response:
            yield from response.iter_bytes()

    def chat(
        self,
        session_id: uuid.UUID | str,
        content: str,
        *,
        context: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
        max_retries: int = 10,
        retry_delay: float = 0.5,
    ) -> Iterator[ChatItem]:
        """Send a user message and stream the service's answer: one `ChatTurn` (both
        messages), then `StreamDelta`s, then one `StreamDone`. A dropped connection is resumed
        by itself: the turn is sent again as the same turn (its Idempotency-Key: one is made
        when none is given), or its answer followed from the last offset received."""
        payload = chat_body(
            content,
            stream=True,
            context=context,
            model_name=model_name,
            system=system,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            expected_last_seq=expected_last_seq,
        )
        return chat_sync(
            self,
            session_id,
            payload,
            idempotency_key or str(uuid.uuid4()),
            max_retries=max_retries,
            retry_delay=retry_delay,
        )

    def follow(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        *,
        offset: int = 0,
        max_retries: int = 10,
        retry_delay: float = 0.5,
    ) -> Iterator[StreamDelta | StreamDone]:
        """Follow a message's text live: `StreamDelta`s from `offset`, then one `StreamDone`.
        A dropped connection is resumed by itself from the last offset received."""
        return follow_sync(
            self,
            session_id,
            message_id,
            offset=offset,
            max_retries=max_retries,
            retry_delay=retry_delay,
        )


class AsyncChatStoreClient(AsyncTransport, ChatStoreApi):
    """Async client; use it with `async with`, or call `aclose()`."""

    async def iter_export(
        self, session_id: uuid.UUID | str | None = None, *, export_format: ExportFormat = "json"
    ) -> AsyncIterator[bytes]:
        """A session's export in `export_format` (docs/export-format.md), or with no session
        everything the caller owns as JSONL, in chunks as the service sends them."""
        async with self._stream(export_call(session_id, export_format)) as response:
            async for chunk in response.aiter_bytes():
                yield chunk

    def chat(
        self,
        session_id: uuid.UUID | str,
        content: str,
        *,
        context: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
        max_retries: int = 10,
        retry_delay: float = 0.5,
    ) -> AsyncIterator[ChatItem]:
        """Send a user message and stream the service's answer: one `ChatTurn` (both
        messages), then `StreamDelta`s, then one `StreamDone`. A dropped connection is resumed
        by itself: the turn is sent again as the same turn (its Idempotency-Key: one is made
        when none is given), or its answer followed from the last offset received."""
        payload = chat_body(
            content,
            stream=True,
            context=context,
            model_name=model_name,
            system=system,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            expected_last_seq=expected_last_seq,
        )
        return chat_async(
            self,
            session_id,
            payload,
            idempotency_key or str(uuid.uuid4()),
            max_retries=max_retries,
            retry_delay=retry_delay,
        )

    def follow(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        *,
        offset: int = 0,
        max_retries: int = 10,
        retry_delay: float = 0.5,
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """Follow a message's text live: `StreamDelta`s from `offset`, then one `StreamDone`.
        A dropped connection is resumed by itself from the last offset received."""
        return follow_async(
            self,
            session_id,
            message_id,
            offset=offset,
            max_retries=max_retries,
            retry_delay=retry_delay,
        )


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
    "TokenPair",
    "UnauthorizedError",
    "User",
    "ValidationError",
    "Workspace",
]
