"""Following a message's text live over Server-Sent Events, reconnecting by itself.

The stream's event ids are code-point offsets into the stored text, so after a dropped
connection the follower asks again with `Last-Event-ID: <offset>` and continues exactly where it
stopped: no character is lost or repeated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import httpx

from chat_store.client._core import API_PREFIX, Call, path_id, raw
from chat_store.client.errors import ChatStoreError
from chat_store.client.models import StreamDelta, StreamDone

if TYPE_CHECKING:
    pass

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


def _item(event: ServerSentEvent) -> StreamItem | None:
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


class FollowOptions(TypedDict, total=False):
    offset: int  # where to start (code points; default 0)
    max_retries: int  # reconnections in a row before the error is raised (default 10)
    retry_delay: float  # seconds, times the failures in a row (default 0.5)


class Follower:
    """Where a follower of one message's text stands: the offset reached, whether it is done, and
    the failures in a row (see `streamed` in _endpoint.py, which runs it on either client)."""

    def __init__(
        self, session_id: uuid.UUID | str, message_id: uuid.UUID | str, options: FollowOptions
    ) -> None:
        self.session_id, self.message_id = session_id, message_id
        self.position = options.get("offset", 0)
        self.max_retries = options.get("max_retries", 10)
        self.retry_delay = options.get("retry_delay", 0.5)
        self.failures = 0
        self.done = False
        self._parser = SseParser()

    def call(self) -> Call[Any]:
        """The stream from where the follower stands (a fresh parser for it)."""
        self._parser = SseParser()
        return _stream_call(self.session_id, self.message_id, self.position)

    def read(self, lines: Iterable[str]) -> Iterator[StreamItem]:
        for line in lines:
            yield from self._feed(line)
            if self.done:
                return

    async def read_async(self, lines: AsyncIterator[str]) -> AsyncIterator[StreamItem]:
        async for line in lines:
            for item in self._feed(line):
                yield item
            if self.done:
                return

    def _feed(self, line: str) -> Iterator[StreamItem]:
        event = self._parser.feed(line)
        if event is None:
            return
        self.failures = 0
        item = _item(event)
        if isinstance(item, StreamDelta):
            self.position = item.offset
        self.done = isinstance(item, StreamDone)
        if item is not None:
            yield item

    def delay_after(self, exc: Exception) -> float:
        """How long to wait before reconnecting; the error itself when it is not worth it."""
        if not _retryable(exc) or self.failures >= self.max_retries:
            raise exc
        self.failures += 1
        return self.retry_delay * self.failures


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ChatStoreError) and exc.status >= 500
