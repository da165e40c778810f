"""A chat turn the service answers, streamed, reattaching by itself.

`POST /chat` answers with the `turn` event (both messages), then the answer's message stream.
Every turn is sent with an Idempotency-Key (one is made when the caller gives none), so a turn
whose connection failed before its `turn` event is sent again as the same turn: the service
neither stores it twice nor calls the model twice. Once the turn is known, a dropped connection
is followed up with `GET .../stream` from the last offset received (`Last-Event-ID`), on which
no character is lost or repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import httpx

from chat_store.client._core import API_PREFIX, Call, body, path_id, raw
from chat_store.client._follow import (
    Follower,
    Retries,
    ServerSentEvent,
    StreamItem,
    TextPosition,
    stream_call,
    stream_item,
)
from chat_store.client.models import ChatTurn, StreamDone

ChatItem = ChatTurn | StreamItem


class TurnOptions(TypedDict, total=False):
    """What a chat turn may say besides its text."""

    context: Mapping[str, Any] | None
    model_name: str | None
    system: str | None
    temperature: float | None
    max_output_tokens: int | None
    expected_last_seq: int | None
    # Function definitions the model may call: [{"type": "function", "function": {...}}].
    tools: Sequence[Mapping[str, Any]] | None
    # With tools only: "none", "auto", "required" or {"type": "function", "function": {"name"}};
    # and whether the model may call several at once. Left out: the provider's defaults.
    tool_choice: str | Mapping[str, Any] | None
    parallel_tool_calls: bool | None


class TurnRequest(TurnOptions, total=False):
    """A turn as sent: its options, and the Idempotency-Key that makes a resend the same turn."""

    idempotency_key: str | None


def chat_path(session_id: uuid.UUID | str) -> str:
    return f"{API_PREFIX}/sessions/{path_id(session_id)}/chat"


def chat_body(content: str | None, *, stream: bool, **turn: Unpack[TurnRequest]) -> dict[str, Any]:
    """The body of POST /chat: the fields given (`model_name` is sent as `model`; no
    `content`: the model answers the stored history). The Idempotency-Key is a header."""
    fields: dict[str, Any] = {"content": content, **turn}
    fields["model"] = fields.pop("model_name", None)
    fields.pop("idempotency_key", None)
    return {**body(**{k: v for k, v in fields.items() if v is not None}), "stream": stream}


def chat_call(session_id: uuid.UUID | str, payload: dict[str, Any], key: str) -> Call[Any]:
    return Call(
        "POST",
        chat_path(session_id),
        json=payload,
        parse=raw,
        headers={"Accept": "text/event-stream", "Idempotency-Key": key},
    )


class _Cut(httpx.TransportError):
    """The turn's stream ended before its `turn` event (counted as a dropped connection)."""

    def __init__(self) -> None:
        super().__init__("the chat stream ended before the turn event")


class ChatFollower(Follower[ChatItem]):
    """A turn: sent (again, as the same turn) until the service has told it, then its answer
    followed from the offset reached."""

    def __init__(
        self, session_id: uuid.UUID | str, payload: dict[str, Any], key: str, retries: Retries
    ) -> None:
        super().__init__(retries)
        self.session_id, self.payload, self.key = session_id, payload, key
        self.turn: ChatTurn | None = None
        self.position = TextPosition(0)

    def _call(self) -> Call[Any]:
        if self.turn is None:
            return chat_call(self.session_id, self.payload, self.key)
        return stream_call(self.session_id, self.turn.assistant_message.id, self.position.offset)

    def _items(self, event: ServerSentEvent) -> Iterable[ChatItem]:
        if event.event == "turn":
            if self.turn is not None:
                return ()
            self.turn = ChatTurn.model_validate_json(event.data)
            return (self.turn,)
        items = self.position.items(stream_item(event))
        self.done = any(isinstance(item, StreamDone) for item in items)
        return items

    def _rewind(self, exc: Exception) -> bool:
        return self.turn is not None and self.position.rewind(exc)

    def _ended(self) -> None:
        if self.turn is None:  # ended before the turn was told: send it again
            raise _Cut
