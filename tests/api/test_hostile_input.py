"""Hostile input: deep nesting, dates at the ends of the range, huge integers, reordered keys.

Each is refused with a 422 that says where (or, for reordered keys, accepted as the same
request), and a write that is refused changes nothing in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chat_store.api.deps import AppState
from tests.assertions import assert_validation_error
from tests.dbsnapshot import changes, snapshot
from tests.factories import API, Account, Factory

SESSIONS = f"{API}/sessions"
JSON = {"Content-Type": "application/json"}
DEFAULT_DEPTH = 32
_MESSAGE = {"role": "user", "content": "hi"}


def nested(depth: int) -> str:
    """A JSON object nested `depth` levels deep (the outer object is level 1), as raw text:
    Python's own JSON encoder gives up long before the server's parser does."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def body_with(template: dict[str, Any], **raw_fields: str) -> bytes:
    """`template` as JSON with each of `raw_fields` put in as raw JSON text."""
    text = json.dumps({**template, **{name: f"@{name}@" for name in raw_fields}})
    for name, raw in raw_fields.items():
        text = text.replace(f'"@{name}@"', raw)
    return text.encode()


def batch_with(raw_message: bytes) -> bytes:
    """A batch of two messages, a valid one and then `raw_message`."""
    return b'{"messages": [' + json.dumps(_MESSAGE).encode() + b", " + raw_message + b"]}"


async def first_event(app: FastAPI, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """The status and the first event of a streamed answer, over raw ASGI: httpx's ASGI
    transport waits for the whole body, and an event stream has no end."""
    received = asyncio.Event()
    status = 0
    body = b""
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await received.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
            if b"\n\n" in body or b"\r\n\r\n" in body or not message.get("more_body"):
                received.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait_for(received.wait(), timeout=10)
    finally:
        received.set()  # receive() now answers that the client is gone
        # A 500 is raised again after it was sent (as servers expect): its status says enough.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
    return status, body


async def assert_reads_work(
    client: httpx.AsyncClient, app: FastAPI, account: Account, session_id: str
) -> None:
    """Every read of the account's sessions and messages answers 200."""
    headers = account.headers
    session = f"{SESSIONS}/{session_id}"
    for url in (
        SESSIONS,
        session,
        f"{session}/messages",
        f"{session}/messages?order=desc",
        f"{session}/context?max_tokens=1000",
    ):
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
    status, event = await first_event(app, f"{session}/events", headers)
    assert status == 200, event
    assert event.startswith((b"event:", b"id:", b":")), event


# --- dates at the ends of the range

# Valid RFC 3339 times whose UTC equivalent falls outside the years 1 to 9999.
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_a_date_filter_beyond_the_range_is_refused(
    client: httpx.AsyncClient, factory: Factory, value: str
) -> None:
    account = await factory.account()

    response = await client.get(SESSIONS, params={"updated_after": value}, headers=account.headers)

    body = assert_validation_error(response, "query", "updated_after")
    assert "out of range" in body["detail"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_an_api_key_expiry_beyond_the_range_is_refused(
    client: httpx.AsyncClient, state: AppState, factory: Factory, value: str
) -> None:
    account = await factory.account()
    before = await snapshot(state)

    response = await client.post(
        f"{API}/api-keys", json={"name": "far", "expires_at": value}, headers=account.headers
    )

    body = assert_validation_error(response, "body", "expires_at")
    assert "out of range" in body["detail"]
    assert changes(before, await snapshot(state)) == {}


async def test_dates_at_the_ends_of_the_range_in_utc_are_taken(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    await factory.chat_session(account)

    for value in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00-14:00"):
        listed = await client.get(
            SESSIONS, params={"updated_after": value}, headers=account.headers
        )
        assert listed.status_code == 200, listed.text
        assert len(listed.json()["data"]) == 1
    listed = await client.get(
        SESSIONS, params={"updated_after": "9999-12-31T23:59:59Z"}, headers=account.headers
    )
    assert listed.status_code == 200 and listed.json()["data"] == []
    key = await factory.api_key(account, expires_at="9999-12-31T09:59:59+14:00")
    assert key["expires_at"] == "9999-12-30T19:59:59Z"
