"""Waiting, in a test, until a request in flight waits for a lock another transaction holds."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from chat_store.state import AppState


async def until_waiting_for_a_lock(
    state: AppState, request: asyncio.Task[Any], *, statement_like: str = "%"
) -> None:
    """Until a statement of the test's database (`LIKE statement_like`) waits for a lock
    (Postgres), or the request has had time to queue for the connection (SQLite's one
    connection); at once when the request has ended."""
    if state.engine.dialect.name != "postgresql":
        await asyncio.sleep(0.3)
        return
    async with state.read_sessionmaker() as probe:
        for _ in range(200):
            waiting = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE :statement"
                ),
                {"statement": statement_like},
            )
            if waiting or request.done():
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"no statement like {statement_like!r} waited for a lock")
