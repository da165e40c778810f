"""Following a message's text live over Server-Sent Events, reconnecting by itself.

The stream's event ids are code-point offsets into the stored text, so after a dropped
connection the follower asks again with `Last-Event-ID: <offset>` and continues exactly where it
stopped: no character is lost or repeated.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from chat_store.client._core import API_PREFIX, Call, path_id, raw
from chat_store.client.errors import ChatStoreError
from chat_store.client.models import StreamDelta, StreamDone

if TYPE_CHECKING:
    from chat_store.client._transports import AsyncTransport, SyncTransport

StreamItem = StreamDelta | StreamDone


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """Incremental text/event-stream parser: feed it lines, get whole events."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r")
        if not line:
            if not self._data:
                self._event = "message"
                return None
            event = ServerSentEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):
            return None  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def parse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


def _stream_call(
    session_id: uuid.UUID | str, message_id: uuid.UUID | str, offset: int
) -> Call[Any]:
    path = f"{API_PREFIX}/sessions/{path_id(session_id)}/messages/{path_id(message_id)}/stream"
    return Call(
        "GET",
        path,
        parse=raw,
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(offset)},
    )


def stream_item(event: ServerSentEvent) -> StreamItem | None:
    """A delta or the final status; None for anything else (a shutdown notice: reconnect)."""
    data = json.loads(event.data) if event.data else {}
    if event.event == "delta":
        return StreamDelta(delta=str(data["delta"]), offset=int(data["offset"]))
    if event.event == "done":
        return StreamDone(
            status=str(data["status"]),
            error_message=data.get("error_message"),
            length=int(data["length"]),
        )
    return None


def retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ChatStoreError) and exc.status >= 500


def follow_sync(
    client: SyncTransport,
    session_id: uuid.UUID | str,
    message_id: uuid.UUID | str,
    *,
    offset: int = 0,
    max_retries: int = 10,
    retry_delay: float = 0.5,
) -> Iterator[StreamItem]:
    position, failures = offset, 0
    while True:
        try:
            with client._stream(_stream_call(session_id, message_id, position)) as response:
                for event in parse_events(response.iter_lines()):
                    failures = 0
                    item = stream_item(event)
                    if isinstance(item, StreamDelta):
                        position = item.offset
                    if item is not None:
                        yield item
                    if isinstance(item, StreamDone):
                        return
        except Exception as exc:
            if not retryable(exc) or failures >= max_retries:
                raise
            failures += 1
            time.sleep(retry_delay * failures)


async def follow_async(
    client: AsyncTransport,
    session_id: uuid.UUID | str,
    message_id: uuid.UUID | str,
    *,
    offset: int = 0,
    max_retries: int = 10,
    retry_delay: float = 0.5,
) -> AsyncIterator[StreamItem]:
    position, failures = offset, 0
    while True:
        try:
            async with client._stream(_stream_call(session_id, message_id, position)) as response:
                parser = SseParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    failures = 0
                    item = stream_item(event)
                    if isinstance(item, StreamDelta):
                        position = item.offset
                    if item is not None:
                        yield item
                    if isinstance(item, StreamDone):
                        return
        except Exception as exc:
            if not retryable(exc) or failures >= max_retries:
                raise
            failures += 1
            await asyncio.sleep(retry_delay * failures)
