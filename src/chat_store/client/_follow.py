"""Following a stream of Server-Sent Events, reconnecting by itself: a message's text live.

The stream's event ids are code-point offsets into the stored text, so after a dropped
connection the follower asks again with `Last-Event-ID: <offset>` and continues exactly where it
stopped: no character is lost or repeated. A `Follower` says which request to (re)send and what
an event means; `streamed` in _endpoint.py runs it on either client.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from chat_store.client._core import API_PREFIX, Call, path_id, raw
from chat_store.client.errors import ChatStoreError
from chat_store.client.models import StreamDelta, StreamDone, StreamReset, StreamStale

StreamItem = StreamDelta | StreamReset | StreamStale | StreamDone


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


# SSE ends a line at CR, LF or CRLF only; str.splitlines() (and so httpx's iter_lines()) also
# ends one at U+2028, U+2029, U+0085 and others, which JSON data may hold as they are.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Text as it arrives, in lines as SSE ends them."""

    def __init__(self) -> None:
        self._buffer = ""
        self._after_cr = False  # the text so far ended with CR: an LF next belongs to it

    def feed(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        lines = _LINE_BREAK.split(self._buffer + text)
        self._buffer = lines.pop()
        return lines

    def end(self) -> list[str]:
        rest, self._buffer = self._buffer, ""
        return [rest] if rest else []


def sse_lines(chunks: Iterable[str]) -> Iterator[str]:
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()


async def sse_lines_async(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    splitter = LineSplitter()
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.end():
        yield line


def parse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


def stream_call(session_id: uuid.UUID | str, message_id: uuid.UUID | str, offset: int) -> Call[Any]:
    """A message's text as a stream, from `offset`."""
    path = f"{API_PREFIX}/sessions/{path_id(session_id)}/messages/{path_id(message_id)}/stream"
    return Call(
        "GET",
        path,
        parse=raw,
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(offset)},
    )


def stream_item(event: ServerSentEvent) -> StreamItem | None:
    """A delta, a replaced text, a silent writer or the final status; None for anything else
    (a shutdown notice: reconnect)."""
    data = json.loads(event.data) if event.data else {}
    if event.event == "delta":
        return StreamDelta(delta=str(data["delta"]), offset=int(data["offset"]))
    if event.event == "reset":
        return StreamReset(text=str(data["text"]), offset=int(data["offset"]))
    if event.event == "stale":
        return StreamStale(
            message_id=uuid.UUID(data["message_id"]),
            seq=int(data["seq"]),
            status=str(data["status"]),
            length=int(data["length"]),
            since=datetime.fromisoformat(data["since"]),
        )
    if event.event == "done":
        return StreamDone(
            status=str(data["status"]),
            error_message=data.get("error_message"),
            length=int(data["length"]),
        )
    return None


_MOST_RETRY_AFTER = 60.0  # seconds

# 5xx answers that the same request gets again at once: no provider is configured.
_LASTING = frozenset({"generation_unavailable"})


def retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ChatStoreError) and exc.status >= 500 and exc.code not in _LASTING


class Retries(TypedDict, total=False):
    max_retries: int  # reconnections in a row before the error is raised (default 10)
    retry_delay: float  # seconds, times the failures in a row (default 0.5)


class FollowOptions(Retries, total=False):
    offset: int  # where to start (code points; default 0)


ItemT = TypeVar("ItemT")


class Follower(Generic[ItemT]):
    """Where a follower of a stream stands: whether it is done, and the failures in a row.
    What to (re)send and what an event is are a subclass's."""

    def __init__(self, retries: Retries) -> None:
        self.max_retries = retries.get("max_retries", 10)
        self.retry_delay = retries.get("retry_delay", 0.5)
        self.failures = 0
        self.done = False
        self._parser = SseParser()

    def call(self) -> Call[Any]:
        """The request to send now (with a fresh parser for its answer)."""
        self._parser = SseParser()
        return self._call()

    def read(self, lines: Iterable[str]) -> Iterator[ItemT]:
        for line in lines:
            yield from self._feed(line)
            if self.done:
                return
        self._ended()

    async def read_async(self, lines: AsyncIterator[str]) -> AsyncIterator[ItemT]:
        async for line in lines:
            for item in self._feed(line):
                yield item
            if self.done:
                return
        self._ended()

    def _feed(self, line: str) -> Iterator[ItemT]:
        event = self._parser.feed(line)
        if event is None:
            return
        self.failures = 0
        yield from self._items(event)

    def _items(self, event: ServerSentEvent) -> Iterable[ItemT]:
        item = self._item(event)
        return () if item is None else (item,)

    def delay_after(self, exc: Exception) -> float:
        """How long to wait before reconnecting; the error itself when it is not worth it."""
        if self._rewind(exc) and self.failures < self.max_retries:
            self.failures += 1
            return 0.0
        if not retryable(exc) or self.failures >= self.max_retries:
            raise exc
        self.failures += 1
        waited = exc.retry_after if isinstance(exc, ChatStoreError) else None
        # The service's Retry-After (a 503 while it starts or is full) when it said one, up to
        # a minute (a proxy's hour would leave the stream for good).
        return max(self.retry_delay * self.failures, min(waited or 0.0, _MOST_RETRY_AFTER))

    def _call(self) -> Call[Any]:
        raise NotImplementedError

    def _item(self, event: ServerSentEvent) -> ItemT | None:
        raise NotImplementedError

    def _ended(self) -> None:
        """The answer ended before the stream was done: sent again at once (a subclass may
        count that as a failure, by raising a retryable error)."""

    def _rewind(self, exc: Exception) -> bool:
        """Whether `exc` is answered by reading again from another place (a subclass's)."""
        return False


class TextPosition:
    """Where a follower of a message's text stands. A reconnect whose offset the text no longer
    reaches (its writer replaced it meanwhile: 409 offset_mismatch) reads again from 0, and
    what it reads first is handed on as the `StreamReset` it is."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self._rewound = False

    def rewind(self, exc: Exception) -> bool:
        if isinstance(exc, ChatStoreError) and exc.code == "offset_mismatch" and self.offset > 0:
            self.offset, self._rewound = 0, True
            return True
        return False

    def items(self, item: StreamItem | None) -> list[StreamItem]:
        if item is None:
            return []
        if self._rewound and isinstance(item, StreamDelta | StreamReset | StreamDone):
            self._rewound = False
            if isinstance(item, StreamDelta):
                item = StreamReset(text=item.delta, offset=item.offset)
            elif isinstance(item, StreamDone):  # replaced by an empty text, then ended
                return [StreamReset(text="", offset=0), item]
        if isinstance(item, StreamDelta | StreamReset):
            self.offset = item.offset
        return [item]


class MessageFollower(Follower[StreamItem]):
    """A message's text: deltas from the offset reached, then its final status."""

    def __init__(
        self, session_id: uuid.UUID | str, message_id: uuid.UUID | str, options: FollowOptions
    ) -> None:
        super().__init__(options)
        self.session_id, self.message_id = session_id, message_id
        self.position = TextPosition(options.get("offset", 0))

    def _call(self) -> Call[Any]:
        return stream_call(self.session_id, self.message_id, self.position.offset)

    def _items(self, event: ServerSentEvent) -> Iterable[StreamItem]:
        items = self.position.items(stream_item(event))
        self.done = any(isinstance(item, StreamDone) for item in items)
        return items

    def _rewind(self, exc: Exception) -> bool:
        return self.position.rewind(exc)
