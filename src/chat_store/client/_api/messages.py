"""Messages: append, read, change, stream deltas into them; resume, fork, context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from chat_store.client._api.common import (
    Completion,
    Id,
    MessageChanges,
    MessagePage,
    Order,
    chat_session_path,
    idempotency_headers,
    message_path,
    messages_path,
)
from chat_store.client._core import UNSET, Call, ClientCore, body, model, query
from chat_store.client._endpoint import endpoint, paginated, streamed
from chat_store.client._follow import FollowOptions, MessageFollower
from chat_store.client.models import (
    ChatSession,
    ContextWindow,
    Deleted,
    Message,
    MessageRole,
    MessageStatus,
    MessageWithLength,
    Page,
    ResumePoint,
    ToolCall,
)


def _append_call(
    session_id: Id, fields: Mapping[str, Any], idempotency_key: str | None
) -> Call[Message]:
    return Call(
        "POST",
        messages_path(session_id),
        json=body(**{k: v for k, v in fields.items() if v is not None}),
        headers=idempotency_headers(idempotency_key),
        parse=model(Message),
    )


class MessagesApi(ClientCore):
    @endpoint
    def append_message(
        self,
        session_id: Id,
        role: MessageRole,
        content: str | None = None,
        *,
        status: MessageStatus | None = None,
        partial_content: str | None = None,
        error_message: str | None = None,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        token_count: int | None = None,
        model_name: str | None = None,
        latency_ms: int | None = None,
        id: Id | None = None,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None,
        tool_call_id: str | None = None,
    ) -> Call[Message]:
        """Append a message (the server gives it the next seq). Create an answer to stream
        with `status="pending"` and no content. An assistant message may carry `tool_calls`;
        a tool message answers one with `tool_call_id`."""
        fields = {
            "role": role,
            "content": content,
            "status": status,
            "partial_content": partial_content,
            "error_message": error_message,
            "context": context,
            "metadata": metadata,
            "token_count": token_count,
            "model": model_name,
            "latency_ms": latency_ms,
            "id": id,
            "expected_last_seq": expected_last_seq,
            "tool_calls": list(tool_calls) if tool_calls is not None else None,
            "tool_call_id": tool_call_id,
        }
        return _append_call(session_id, fields, idempotency_key)

    @endpoint
    def append_tool_result(
        self,
        session_id: Id,
        tool_call_id: str,
        content: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Message]:
        """Append what a tool returned: a complete `tool` message answering the call
        `tool_call_id` of an assistant message of the session. Once every call is answered,
        `chat(session_id)` without content has the model go on."""
        fields = {
            "role": "tool",
            "content": content,
            "tool_call_id": tool_call_id,
            "metadata": metadata,
        }
        return _append_call(session_id, fields, idempotency_key)

    @endpoint
    def append_messages(
        self,
        session_id: Id,
        messages: list[Mapping[str, Any]],
        *,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Page[Message]]:
        """Append several messages at once: all of them or none."""
        payload = body(
            messages=list(messages),
            expected_last_seq=UNSET if expected_last_seq is None else expected_last_seq,
        )
        return Call(
            "POST",
            f"{messages_path(session_id)}/batch",
            json=payload,
            headers=idempotency_headers(idempotency_key),
            parse=model(Page[Message]),
        )

    @endpoint
    def list_messages(self, session_id: Id, **options: Unpack[MessagePage]) -> Call[Page[Message]]:
        """One page of a session's messages in seq order (`order="desc"`: newest first)."""
        path = messages_path(session_id)
        return Call("GET", path, params=query(**options), parse=model(Page[Message]))

    @paginated
    def iter_messages(
        self,
        session_id: Id,
        *,
        order: Order | None = None,
        after_seq: int | None = None,
        page_size: int = 100,
    ) -> Call[Page[Message]]:
        """Every message of a session in seq order, fetched page by page."""
        return Call(
            "GET",
            messages_path(session_id),
            params=query(limit=page_size, order=order, after_seq=after_seq),
            parse=model(Page[Message]),
        )

    @endpoint
    def get_message(self, session_id: Id, message_id: Id) -> Call[Message]:
        """One message."""
        return Call("GET", message_path(session_id, message_id), parse=model(Message))

    @endpoint
    def update_message(
        self, session_id: Id, message_id: Id, **changes: Unpack[MessageChanges]
    ) -> Call[Message]:
        """Change a message: status (forward only), text, error, metadata, counts."""
        path = message_path(session_id, message_id)
        return Call("PATCH", path, json=body(**changes), parse=model(Message))

    @endpoint
    def complete_message(
        self, session_id: Id, message_id: Id, **completion: Unpack[Completion]
    ) -> Call[Message]:
        """Mark a streamed answer complete (its streamed text becomes `content`)."""
        update = MessagesApi.update_message.build
        return update(self, session_id, message_id, status="complete", **completion)

    @endpoint
    def delete_message(self, session_id: Id, message_id: Id) -> Call[Deleted]:
        """Delete a message (its seq is never reused)."""
        return Call("DELETE", message_path(session_id, message_id), parse=model(Deleted))

    @endpoint
    def append_delta(
        self, session_id: Id, message_id: Id, delta: str, offset: int, *, return_text: bool = False
    ) -> Call[MessageWithLength]:
        """Stream `delta` into a pending/in_progress message at `offset` (code points).

        Retrying the last delta at the same offset is safe (nothing changes). By default the
        answer leaves out the text so far (`Prefer: return=minimal`), so each delta costs the
        same however long the answer grows; `length` is the stored length after it.
        """
        headers = {} if return_text else {"Prefer": "return=minimal"}
        return Call(
            "POST",
            f"{message_path(session_id, message_id)}/append",
            json={"delta": delta, "offset": offset},
            headers=headers,
            parse=model(MessageWithLength),
        )

    @endpoint
    def resume(self, session_id: Id, *, history_limit: int | None = None) -> Call[ResumePoint]:
        """Where to continue: the newest unfinished assistant message, its offset, history."""
        return Call(
            "POST",
            f"{chat_session_path(session_id)}/resume",
            params=query(history_limit=history_limit),
            parse=model(ResumePoint),
        )

    @endpoint
    def fork_session(
        self, session_id: Id, message_id: Id, *, idempotency_key: str | None = None
    ) -> Call[ChatSession]:
        """A new session with copies of the messages up to and including `message_id`."""
        return Call(
            "POST",
            f"{chat_session_path(session_id)}/fork",
            json={"message_id": str(message_id)},
            headers=idempotency_headers(idempotency_key),
            parse=model(ChatSession),
        )

    @streamed
    def follow(
        self, session_id: Id, message_id: Id, **options: Unpack[FollowOptions]
    ) -> MessageFollower:
        """Follow a message's text live: `StreamDelta`s from `offset`, then one `StreamDone`;
        a `StreamStale` each time its writer falls silent (following goes on), a `StreamReset`
        (the whole text, in place of what came so far) if its writer replaces the text. A
        dropped connection is resumed by itself from the last offset received."""
        return MessageFollower(session_id, message_id, options)

    @endpoint
    def context(self, session_id: Id, max_tokens: int) -> Call[ContextWindow]:
        """The newest messages that fit `max_tokens` (tool calls stay with their results)."""
        return Call(
            "GET",
            f"{chat_session_path(session_id)}/context",
            params=query(max_tokens=max_tokens),
            parse=model(ContextWindow),
        )
