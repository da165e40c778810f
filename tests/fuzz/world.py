"""The world fuzzed requests point at: real rows (two users, their keys, sessions and
messages, a guest), and a wrapper that ends event streams so that they can be read whole."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from tests.factories import API, Account, Factory

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

# How long an event stream (/stream, /events) is read before the client hangs up: long enough
# for a replay of the small world to be sent, short enough to keep a few hundred examples fast.
STREAM_READ_SECONDS = 0.05

OPEN_TEXT = "Hello 🙂 wörld "  # an astral character: offsets are code points


class EndEventStreams:
    """ASGI wrapper: an event-stream answer is ended (as if the client hung up) shortly after
    it starts. httpx's ASGI transport returns only once the app has sent the whole body, and a
    followed stream never ends by itself."""

    def __init__(self, app: FastAPI, seconds: float = STREAM_READ_SECONDS) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ended = False
        cut: asyncio.Task[None] | None = None

        async def end_body() -> None:
            nonlocal ended
            await asyncio.sleep(self.seconds)
            if not ended:
                ended = True
                # The client has the whole answer now; its receive() then says "disconnect".
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def guarded_send(message: Message) -> None:
            nonlocal ended, cut
            if ended:
                return
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    cut = asyncio.create_task(end_body())
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            if cut is not None:
                cut.cancel()


@dataclass
class World:
    """Rows that exist, for generated requests to point at: the caller's and another user's."""

    account: Account
    api_key: str
    api_key_id: str
    session_id: str
    message_id: str  # a complete user message
    open_message_id: str  # a pending assistant message with OPEN_TEXT streamed
    open_length: int
    other_session_id: str
    other_message_id: str
    other_key_id: str
    client_id: str  # a guest's X-Client-ID

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers


async def build_world(client: httpx.AsyncClient) -> World:
    factory = Factory(client)
    account, other = await factory.account(), await factory.account()
    key, other_key = await factory.api_key(account), await factory.api_key(other)
    session = await factory.chat_session(account, title="fuzzed", metadata={"k": [1, {"v": 2}]})
    message = await factory.message(account, session["id"], content="Why does it fail?")
    open_message = await factory.message(
        account, session["id"], role="assistant", status="pending", partial_content=OPEN_TEXT
    )
    other_session = await factory.chat_session(other)
    other_message = await factory.message(other, other_session["id"])
    client_id = str(uuid.uuid4())
    guest = await client.get(f"{API}/sessions", headers={"X-Client-ID": client_id})
    assert guest.status_code == 200, guest.text
    return World(
        account=account,
        api_key=key["key"],
        api_key_id=key["id"],
        session_id=session["id"],
        message_id=message["id"],
        open_message_id=open_message["id"],
        open_length=len(OPEN_TEXT),
        other_session_id=other_session["id"],
        other_message_id=other_message["id"],
        other_key_id=other_key["id"],
        client_id=client_id,
    )
