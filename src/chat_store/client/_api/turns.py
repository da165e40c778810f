"""Chat turns the service answers itself: send one (streamed or waited for), cancel an answer,
continue one."""

from __future__ import annotations

import uuid
from typing import Unpack

from chat_store.client._api.common import Id, idempotency_headers, message_path
from chat_store.client._chat import ChatFollower, ChatItem, TurnRequest, chat_body, chat_path
from chat_store.client._core import Call, ClientCore, model
from chat_store.client._endpoint import endpoint, streamed
from chat_store.client._follow import Retries
from chat_store.client.models import ChatTurn, Message

# How much longer than the client's timeout a turn waited for is given: the service answers
# it (202) at REQUEST_TIMEOUT_SECONDS, 30 by default.
_SERVER_LIMIT_MARGIN = 30.0


class TurnsApi(ClientCore):
    @streamed
    def chat(
        self,
        session_id: Id,
        content: str | None = None,
        *,
        max_retries: int = 10,
        retry_delay: float = 0.5,
        **turn: Unpack[TurnRequest],
    ) -> ChatFollower:
        """Send a user message and stream the service's answer: one `ChatTurn` (both
        messages), then `StreamDelta`s (and a `StreamStale` if the answer's writer falls
        silent, a `StreamReset` if its text is replaced), then one `StreamDone`. A dropped
        connection is resumed by itself: the turn is sent again as the same turn (its
        Idempotency-Key: one is made when none is given), or its answer followed from the last
        offset received. Without `content` the model
        answers the stored history (after tool results were appended): the turn's
        `user_message` is None."""
        key = turn.get("idempotency_key") or str(uuid.uuid4())
        payload = chat_body(content, stream=True, **turn)
        retries = Retries(max_retries=max_retries, retry_delay=retry_delay)
        return ChatFollower(session_id, payload, key, retries)

    @endpoint
    def send_chat(
        self, session_id: Id, content: str | None = None, **turn: Unpack[TurnRequest]
    ) -> Call[ChatTurn]:
        """Send a user message and wait for the service's answer (`stream: false`): the turn
        with the answer complete, or, when the server's time limit came first (202), as it
        stands; follow the rest with `follow()`. The answer is waited for 30 s longer than the
        client's timeout, so that the server's 202 comes first; to send the turn again after a
        lost answer without a second message, give it an `idempotency_key`."""
        headers = idempotency_headers(turn.get("idempotency_key"))
        payload = chat_body(content, stream=False, **turn)
        return Call(
            "POST",
            chat_path(session_id),
            json=payload,
            headers=headers,
            parse=model(ChatTurn),
            extra_wait=_SERVER_LIMIT_MARGIN,
        )

    @endpoint
    def cancel(self, session_id: Id, message_id: Id) -> Call[Message]:
        """Stop generating an answer, wherever it runs: `cancelled`, its text kept."""
        return Call("POST", f"{message_path(session_id, message_id)}/cancel", parse=model(Message))

    @endpoint
    def continue_message(self, session_id: Id, message_id: Id) -> Call[Message]:
        """Generate the rest of a failed or abandoned answer after its stored text; follow it
        with `follow(..., offset=len(message.text))`."""
        path = f"{message_path(session_id, message_id)}/continue"
        return Call("POST", path, parse=model(Message))


__all__ = ["ChatItem", "TurnsApi"]
