"""A live stream whose client goes away while it reads the store: the read runs to its end.
Cut inside the driver, it made the pool throw the connection away (on SQLite the process's one
connection that writes) and left its close pending (`Task was destroyed but it is pending`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import messages as message_crud
from chat_store.state import AppState
from tests.factories import API, Factory

# A statement that takes about half a second.
_SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000)"
    " SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(0.5)",
}


@pytest.mark.parametrize("route", ["stream", "events"])
async def test_a_stream_left_while_it_reads_keeps_its_connection(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    answer = await factory.message(
        account, sid, role="assistant", status="in_progress", partial_content="The "
    )
    path = f"/messages/{answer['id']}/stream" if route == "stream" else "/events"
    slow_sql = text(_SLOW[state.engine.dialect.name])
    reading = asyncio.Event()

    def slowed(real: Any) -> Any:
        async def read(db: AsyncSession, *args: Any, **kwargs: Any) -> Any:
            # The stream's own reads (the request's checks before it run in the request's).
            if db.info.get("stream"):
                reading.set()
                await db.execute(slow_sql)
            return await real(db, *args, **kwargs)

        return read

    made = state.snapshot_sessionmaker

    def marked() -> AsyncSession:
        session = made()
        session.info["stream"] = True
        return session

    monkeypatch.setattr(state, "snapshot_sessionmaker", marked)
    monkeypatch.setattr(message_crud, "get_for_owner", slowed(message_crud.get_for_owner))
    monkeypatch.setattr(message_crud, "open_in_session", slowed(message_crud.open_in_session))
    invalidated: list[BaseException | None] = []

    def on_invalidate(_connection: Any, _record: Any, exc: BaseException | None) -> None:
        invalidated.append(exc)

    event.listen(state.engine.sync_engine, "invalidate", on_invalidate)
    try:
        stream = asyncio.create_task(
            client.get(f"{API}/sessions/{sid}{path}", headers=account.headers)
        )
        await asyncio.wait_for(reading.wait(), 10)
        await asyncio.sleep(0.1)  # inside the slow statement
        stream.cancel()  # the client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await stream
        await asyncio.sleep(1.0)  # the read ends
    finally:
        event.remove(state.engine.sync_engine, "invalidate", on_invalidate)

    assert invalidated == []
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    assert listed.status_code == 200
