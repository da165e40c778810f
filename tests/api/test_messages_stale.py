"""A writer that went silent: its open message reads as `stale`, and resume picks it up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import AppWith
from tests.factories import API, Factory


@pytest.fixture
async def client(app_with: AppWith) -> AsyncIterator[httpx.AsyncClient]:
    """Open messages turn stale after a second without a change."""
    async with app_with(stale_stream_seconds=1) as quick:
        yield quick.client


async def test_a_silent_writer_is_reported_stale(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    base = f"{API}/sessions/{session['id']}/messages"
    created = await client.post(
        base, json={"role": "assistant", "status": "pending"}, headers=account.headers
    )
    message = created.json()
    assert message["stale"] is False
    url = f"{base}/{message['id']}"
    appended = await client.post(
        f"{url}/append", json={"delta": "half an ans", "offset": 0}, headers=account.headers
    )
    assert appended.json()["stale"] is False
    listed = await client.get(base, headers=account.headers)  # fills the hot-history cache
    assert listed.json()["data"][0]["stale"] is False

    await asyncio.sleep(1.1)
    assert (await client.get(url, headers=account.headers)).json()["stale"] is True
    # The cached copy of the history does not hide it either.
    listed = await client.get(base, headers=account.headers)
    assert listed.json()["data"][0]["stale"] is True
    point = await client.post(f"{API}/sessions/{session['id']}/resume", headers=account.headers)
    assert point.json()["message"]["id"] == message["id"]
    assert point.json()["message"]["stale"] is True
    assert point.json()["offset"] == len("half an ans")

    # A new delta brings it back to life; a finished message is never stale.
    await client.post(f"{url}/append", json={"delta": "wer", "offset": 11}, headers=account.headers)
    assert (await client.get(url, headers=account.headers)).json()["stale"] is False
    await client.patch(url, json={"status": "complete"}, headers=account.headers)
    await asyncio.sleep(1.1)
    done = (await client.get(url, headers=account.headers)).json()
    assert (done["status"], done["stale"], done["content"]) == ("complete", False, "half an answer")
