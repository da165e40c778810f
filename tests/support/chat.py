"""What tests of the service's own chat turns share: settings that point the app at the test
provider, SSE bodies read back as events, waiting for an answer to start or end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from chat_store.client._follow import parse_events
from chat_store.models import ChatSession
from chat_store.services import archive as archive_service
from chat_store.services.archive import Archiver
from chat_store.settings import Settings
from chat_store.state import AppState
from tests.backends import Backend
from tests.conftest import AppUnderTest, AppWith, make_settings
from tests.factories import API, Account, Factory
from tests.support.llm_server import LlmServer

# The models the test provider is scripted with; the service allows all of them.
MODELS = ["test", "slow", "broken", "silent", "cut", "other"]

SECRET = "sk-test-" + "k" * 24


def chat_overrides(llm: LlmServer, **overrides: Any) -> dict[str, Any]:
    """Settings (over make_settings') of an app that answers chat turns with the test provider."""
    values: dict[str, Any] = {
        "llm_base_url": llm.base_url,
        "llm_model": "test",
        "llm_models": MODELS,
        "llm_api_key": SECRET,
        "llm_max_retries": 0,
        "llm_timeout_seconds": 1.5,
        "generation_flush_seconds": 0.02,
        "stream_poll_seconds": 0.5,
        "request_timeout_seconds": 4.0,
    }
    values.update(overrides)
    return values


def chat_settings(backend: Backend, llm: LlmServer, **overrides: Any) -> Settings:
    """For a module's own `app`."""
    return make_settings(backend, **chat_overrides(llm, **overrides))


def chat_app(
    app_with: AppWith, llm: LlmServer, **overrides: Any
) -> AbstractAsyncContextManager[AppUnderTest]:
    """An app of the test's own (`app_with`) that answers chat turns with the test provider."""
    return app_with(**chat_overrides(llm, **overrides))


async def new_session(factory: Factory, **body: Any) -> tuple[Account, str]:
    account = await factory.account()
    session = await factory.chat_session(account, **body)
    return account, session["id"]


async def first_answer(
    client: httpx.AsyncClient, account: Account, session_id: str
) -> dict[str, Any]:
    """The session's first assistant message, once some of its text is stored."""
    for _ in range(300):
        listed = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
        answers = [m for m in listed.json()["data"] if m["role"] == "assistant"]
        if answers and answers[0]["partial_content"]:
            return answers[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no answer started")


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


async def archive_session(app: FastAPI, session_id: str) -> archive_service.ArchiveReport:
    """Move the session's messages to the archive, as the archive job does with an idle one."""
    state: AppState = app.state.resources
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id == uuid.UUID(session_id))
            .values(last_activity_at=datetime.now(UTC) - timedelta(days=100))
        )
    archiver = Archiver(state.sessionmaker, state.archive)
    report = await archive_service.archive_idle_sessions(
        archiver, timedelta(days=90), dry_run=False
    )
    assert report.sessions == 1
    return report


async def wait_for_outcome(llm: LlmServer, model: str, outcome: str, timeout: float = 10) -> None:
    """Until the provider's last request for `model` ended as `outcome`."""
    deadline = time.monotonic() + timeout
    while True:
        requests = await llm.requests(model)
        if requests and requests[-1]["outcome"] == outcome:
            return
        assert time.monotonic() < deadline, requests
        await asyncio.sleep(0.05)
