"""Helpers for tests of the service's own chat turns: the app wired to the test provider, SSE
bodies read back as events, waiting for an answer to end."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from chat_store.client._follow import parse_events
from tests.factories import API, Account

# The models the test provider is scripted with; the service allows all of them.
MODELS = ["test", "slow", "broken", "silent", "cut", "other"]


@dataclass(frozen=True)
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


def events_of(body: str) -> list[Event]:
    return [
        Event(item.event, json.loads(item.data) if item.data else {}, item.id)
        for item in parse_events(body.splitlines())
    ]


def streamed_text(events: list[Event]) -> str:
    return "".join(event.data["delta"] for event in events if event.event == "delta")


def chat_path(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/chat"


def message_path(session_id: str, message_id: str) -> str:
    return f"{API}/sessions/{session_id}/messages/{message_id}"


async def wait_for_status(
    client: httpx.AsyncClient,
    account: Account,
    session_id: str,
    message_id: str,
    statuses: tuple[str, ...] = ("complete", "failed", "cancelled"),
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The message once its status is one of `statuses` (polling)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(message_path(session_id, message_id), headers=account.headers)
        assert response.status_code == 200, response.text
        message: dict[str, Any] = response.json()
        if message["status"] in statuses:
            return message
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.05)


async def wait_for_text(
    client: httpx.AsyncClient,
    account: Account,
    session_id: str,
    message_id: str,
    min_chars: int = 1,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The message once at least `min_chars` of its answer are stored."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(message_path(session_id, message_id), headers=account.headers)
        message: dict[str, Any] = response.json()
        text = message["content"] or message["partial_content"] or ""
        if len(text) >= min_chars:
            return message
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)
