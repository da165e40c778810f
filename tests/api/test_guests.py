"""Guest mode: an X-Client-ID owns its sessions until a signed-in user claims them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import AppWith
from tests.factories import API, Factory


@pytest.fixture
async def guest_client(app_with: AppWith) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(allow_guests=True) as guests_allowed:
        yield guests_allowed.client


async def test_guests_are_off_by_default(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"{API}/sessions", headers={"X-Client-ID": str(uuid.uuid4())})
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


async def test_a_guest_owns_its_sessions_and_a_user_claims_them(
    guest_client: httpx.AsyncClient,
) -> None:
    client = guest_client
    guest = {"X-Client-ID": str(uuid.uuid4())}
    other_guest = {"X-Client-ID": str(uuid.uuid4())}
    created = await client.post(f"{API}/sessions", json={"title": "draft"}, headers=guest)
    assert created.status_code == 201
    session_id = created.json()["id"]
    appended = await client.post(
        f"{API}/sessions/{session_id}/messages",
        json={"role": "user", "content": "hi"},
        headers=guest,
    )
    assert appended.status_code == 201
    # Another guest sees nothing of it.
    assert (await client.get(f"{API}/sessions", headers=other_guest)).json()["data"] == []
    hidden = await client.get(f"{API}/sessions/{session_id}", headers=other_guest)
    assert hidden.status_code == 404
    # A guest cannot mint API keys, nor claim.
    refused = await client.post(f"{API}/api-keys", json={"name": "k"}, headers=guest)
    assert (refused.status_code, refused.json()["code"]) == (403, "guest_not_allowed")
    bad = await client.get(f"{API}/sessions", headers={"X-Client-ID": "not-a-uuid"})
    assert bad.status_code == 401

    account = await Factory(client).account()
    claim = await client.post(
        f"{API}/auth/claim", json={"client_id": guest["X-Client-ID"]}, headers=account.headers
    )
    assert claim.status_code == 200, claim.text
    assert claim.json() == {
        "object": "claim",
        "client_id": guest["X-Client-ID"],
        "sessions_moved": 1,
    }
    mine = (await client.get(f"{API}/sessions", headers=account.headers)).json()["data"]
    assert [s["id"] for s in mine] == [session_id]
    history = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
    assert [m["content"] for m in history.json()["data"]] == ["hi"]
    # The guest is gone: its client id starts over, empty.
    assert (await client.get(f"{API}/sessions", headers=guest)).json()["data"] == []
    again = await client.post(
        f"{API}/auth/claim", json={"client_id": str(uuid.uuid4())}, headers=account.headers
    )
    assert (again.status_code, again.json()["code"]) == (404, "not_found")


async def test_a_guest_cannot_log_in_with_any_password(guest_client: httpx.AsyncClient) -> None:
    client_id = uuid.uuid4()
    await guest_client.get(f"{API}/sessions", headers={"X-Client-ID": str(client_id)})
    answer = await guest_client.post(
        f"{API}/auth/token",
        data={"username": f"guest-{client_id}@guests.invalid", "password": "!guest"},
    )
    assert answer.status_code == 401
