"""Retention: idle sessions purged in batches, with a dry run first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from chat_store.api.deps import AppState
from chat_store.models import ChatSession, Message
from chat_store.services import retention
from tests.factories import API, Factory


def test_purge_durations() -> None:
    assert retention.parse_duration("90d") == timedelta(days=90)
    assert retention.parse_duration("12h") == timedelta(hours=12)
    assert retention.parse_duration(" 30m ") == timedelta(minutes=30)
    for bad in ("", "90", "d", "-1d", "0d", "1w", "1.5d"):
        with pytest.raises(ValueError):
            retention.parse_duration(bad)


async def test_purge_deletes_only_idle_sessions_in_batches(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "BATCH_SESSIONS", 2)  # several batches from five sessions
    account = await factory.account()
    sessions = [await factory.chat_session(account) for _ in range(6)]
    for session in sessions:
        url = f"{API}/sessions/{session['id']}/messages"
        await client.post(url, json={"role": "user", "content": "x"}, headers=account.headers)
    old = [uuid.UUID(s["id"]) for s in sessions[:5]]
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id.in_(old))
            .values(last_activity_at=datetime.now(UTC) - timedelta(days=100))
        )

    dry = await retention.purge_idle_sessions(state.sessionmaker, timedelta(days=90), dry_run=True)
    assert (dry.sessions, dry.messages) == (5, 5)
    async with state.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(ChatSession)) == 6

    done = await retention.purge_idle_sessions(
        state.sessionmaker, timedelta(days=90), dry_run=False
    )
    assert (done.sessions, done.messages) == (5, 5)
    async with state.sessionmaker() as db:
        left = list(await db.scalars(select(ChatSession.id)))
        assert left == [uuid.UUID(sessions[5]["id"])]
        assert await db.scalar(select(func.count()).select_from(Message)) == 1
