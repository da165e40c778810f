"""What the middleware does to every request: the time limit (504), HSTS when turned on."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chat_store.models import ChatSession
from tests.conftest import AppWith
from tests.factories import API, Factory


async def test_a_slow_request_is_answered_504_and_rolled_back(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat_store.services import chat_sessions as chat_session_service

    real_insert = chat_session_service._insert

    async def slow_insert(*args: object, **kwargs: object) -> ChatSession:
        row = await real_insert(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(5)
        return row

    monkeypatch.setattr(chat_session_service, "_insert", slow_insert)
    # The account through the usual app: only the slow request meets the short timeout (a
    # registration on a busy machine can take longer than it).
    account = await factory.account()
    async with app_with(request_timeout_seconds=0.3) as started:
        hurried = started.client
        # With a key the write and its stored answer are one transaction (without one, the
        # insert may run in autocommit on Postgres, and then only the answer is late).
        keyed = {**account.headers, "Idempotency-Key": "slow-create"}
        answer = await hurried.post(f"{API}/sessions", json={}, headers=keyed)
        assert answer.status_code == 504
        assert answer.json()["code"] == "timeout"
    monkeypatch.setattr(chat_session_service, "_insert", real_insert)
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert listed.json()["data"] == []  # nothing half-written was kept


async def test_hsts_only_when_turned_on(app_with: AppWith, client: httpx.AsyncClient) -> None:
    assert "strict-transport-security" not in (await client.get("/health")).headers
    async with app_with(hsts_enabled=True) as https:
        answer = await https.client.get("/health")
        assert answer.headers["strict-transport-security"].startswith("max-age=")


async def test_auth_answers_are_not_stored_under_a_root_path(app_with: AppWith) -> None:
    """Behind a proxy that publishes the service under ROOT_PATH and forwards the prefix, the
    request's path has it in front; token and API-key answers still carry no-store."""
    async with app_with(root_path="/chat-store") as proxied:
        factory = Factory(proxied.client)
        account = await factory.account()
        prefixed = f"/chat-store{API}"
        token = await proxied.client.post(
            f"{prefixed}/auth/token", data={"username": account.email, "password": account.password}
        )
        key = await proxied.client.post(
            f"{prefixed}/api-keys", json={"name": "behind a proxy"}, headers=account.headers
        )
        session = await proxied.client.post(
            f"{prefixed}/sessions", json={}, headers=account.headers
        )

    assert token.status_code == 200, token.text
    assert key.status_code == 201, key.text
    for answer in (token, key):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    assert session.status_code == 201, session.text
    assert "cache-control" not in session.headers
