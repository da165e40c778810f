"""A chat turn the service answers, streamed, reattaching by itself.

`POST /chat` answers with the `turn` event (both messages), then the answer's message stream.
Every turn is sent with an Idempotency-Key (one is made when the caller gives none), so a turn
whose connection failed before its `turn` event is sent again as the same turn: the service
neither stores it twice nor calls the model twice. Once the turn is known, a dropped connection
is followed up with `GET .../stream` from the last offset received (`Last-Event-ID`), on which
no character is lost or repeated.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from chat_store.client._core import API_PREFIX, Call, path_id, raw
from chat_store.client._follow import (
    ServerSentEvent,
    SseParser,
    StreamItem,
    follow_async,
    follow_sync,
    parse_events,
    retryable,
    stream_item,
)
from chat_store.client.models import ChatTurn, StreamDelta, StreamDone

if TYPE_CHECKING:
    from chat_store.client._transports import AsyncTransport, SyncTransport

ChatItem = ChatTurn | StreamItem


class _Cut(httpx.TransportError):
    """The turn's stream ended before its `turn` event (counted as a dropped connection)."""

    def __init__(self) -> None:
        super().__init__("the chat stream ended before the turn event")


def chat_call(session_id: uuid.UUID | str, payload: dict[str, Any], key: str) -> Call[Any]:
    return Call(
        "POST",
        f"{API_PREFIX}/sessions/{path_id(session_id)}/chat",
        json=payload,
        parse=raw,
        headers={"Accept": "text/event-stream", "Idempotency-Key": key},
    )


class _Progress:
    """What a turn's stream has given so far: the turn, and the offset of its text."""

    def __init__(self) -> None:
        self.turn: ChatTurn | None = None
        self.position = 0
        self.done = False

    def read(self, event: ServerSentEvent) -> ChatItem | None:
        if event.event == "turn":
            if self.turn is not None:
                return None
            self.turn = ChatTurn.model_validate_json(event.data)
            return self.turn
        item = stream_item(event)
        if isinstance(item, StreamDelta):
            self.position = item.offset
        elif isinstance(item, StreamDone):
            self.done = True
        return item


def chat_sync(
    client: SyncTransport,
    session_id: uuid.UUID | str,
    payload: dict[str, Any],
    key: str,
    *,
    max_retries: int,
    retry_delay: float,
) -> Iterator[ChatItem]:
    progress, failures = _Progress(), 0
    while progress.turn is None:
        try:
            with client._stream(chat_call(session_id, payload, key)) as response:
                for event in parse_events(response.iter_lines()):
                    failures = 0
                    item = progress.read(event)
                    if item is not None:
                        yield item
                    if progress.done:
                        return
            if progress.turn is None:  # ended before the turn was told: send it again
                raise _Cut
        except Exception as exc:
            if not retryable(exc) or failures >= max_retries:
                raise
            failures += 1
            time.sleep(retry_delay * failures)
    yield from follow_sync(
        client,
        session_id,
        progress.turn.assistant_message.id,
        offset=progress.position,
        max_retries=max_retries,
        retry_delay=retry_delay,
    )


async def chat_async(
    client: AsyncTransport,
    session_id: uuid.UUID | str,
    payload: dict[str, Any],
    key: str,
    *,
    max_retries: int,
    retry_delay: float,
) -> AsyncIterator[ChatItem]:
    progress, failures = _Progress(), 0
    while progress.turn is None:
        try:
            async with client._stream(chat_call(session_id, payload, key)) as response:
                parser = SseParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    failures = 0
                    item = progress.read(event)
                    if item is not None:
                        yield item
                    if progress.done:
                        return
            if progress.turn is None:  # ended before the turn was told: send it again
                raise _Cut
        except Exception as exc:
            if not retryable(exc) or failures >= max_retries:
                raise
            failures += 1
            await asyncio.sleep(retry_delay * failures)
    async for item in follow_async(
        client,
        session_id,
        progress.turn.assistant_message.id,
        offset=progress.position,
        max_retries=max_retries,
        retry_delay=retry_delay,
    ):
        yield item
