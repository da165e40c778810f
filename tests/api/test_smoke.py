from __future__ import annotations

import httpx

from tests.factories import API, Factory


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.json() == {"status": "ok", "version": "0.1.0"}


async def test_create_and_list_sessions(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    created = await factory.chat_session(account, title="first")
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert [s["id"] for s in listed.json()["data"]] == [created["id"]]
