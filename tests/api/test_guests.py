"""Guest mode: an X-Client-ID owns its sessions until a signed-in user claims them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, insert, select

from chat_store.models import ChatSession, User
from chat_store.services.principals import GUEST_PASSWORD_HASH
from chat_store.state import AppState
from tests.assertions import assert_problem
from tests.backends import Backend
from tests.conftest import AppWith
from tests.factories import API, Factory
from tests.support.chat import events_of
from tests.support.locks import until_waiting_for_a_lock


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


async def test_a_claim_ends_the_streams_the_guest_follows_at_once(
    guest_client: httpx.AsyncClient,
) -> None:
    """The guest's open feed and message stream would otherwise carry the new owner's writes
    until their next re-read (up to STREAM_POLL_SECONDS plus STREAM_CREDENTIAL_CHECK_SECONDS,
    5 s each by default): they end before the owner writes."""
    client = guest_client
    guest = {"X-Client-ID": str(uuid.uuid4())}
    session_id = (await client.post(f"{API}/sessions", json={}, headers=guest)).json()["id"]
    messages = f"{API}/sessions/{session_id}/messages"
    answer = await client.post(
        messages, json={"role": "assistant", "status": "pending"}, headers=guest
    )
    assert answer.status_code == 201, answer.text
    answer_url = f"{messages}/{answer.json()['id']}"
    feed = asyncio.create_task(client.get(f"{API}/sessions/{session_id}/events", headers=guest))
    stream = asyncio.create_task(client.get(f"{answer_url}/stream", headers=guest))
    await asyncio.sleep(0.5)  # both followed, past their first read

    account = await Factory(client).account()
    claim = await client.post(
        f"{API}/auth/claim", json={"client_id": guest["X-Client-ID"]}, headers=account.headers
    )
    assert claim.status_code == 200, claim.text
    # The new owner writes at once: a delta and a message.
    secret = "the owner's own words"
    written = await client.post(
        f"{answer_url}/append", json={"delta": secret, "offset": 0}, headers=account.headers
    )
    assert written.status_code == 200, written.text
    created = await client.post(
        messages, json={"role": "user", "content": secret}, headers=account.headers
    )
    assert created.status_code == 201, created.text

    fed = await asyncio.wait_for(feed, 2)
    streamed = await asyncio.wait_for(stream, 2)
    for response in (fed, streamed):
        assert events_of(response.text)[-1].data == {"reason": "unauthorized"}
        assert secret not in response.text


async def test_a_guest_cannot_log_in_with_any_password(guest_client: httpx.AsyncClient) -> None:
    client_id = uuid.uuid4()
    created = await guest_client.post(
        f"{API}/sessions", json={}, headers={"X-Client-ID": str(client_id)}
    )
    assert created.status_code == 201
    answer = await guest_client.post(
        f"{API}/auth/token",
        data={"username": f"guest-{client_id}@guests.invalid", "password": "!guest"},
    )
    assert answer.status_code == 401


async def test_a_guest_cannot_set_a_password(
    guest_client: httpx.AsyncClient, state: AppState
) -> None:
    client_id = uuid.uuid4()
    guest = {"X-Client-ID": str(client_id)}
    # A guest with no row yet is refused the same way, and still stores nothing.
    unsaved = await guest_client.patch(
        f"{API}/users/me", json={"password": "a new password"}, headers=guest
    )
    assert_problem(unsaved, 403, "guest_not_allowed")
    assert await count_guests(state) == 0

    created = await guest_client.post(f"{API}/sessions", json={}, headers=guest)
    assert created.status_code == 201
    before = (await guest_client.get(f"{API}/users/me", headers=guest)).json()
    for body in (
        {"password": "a new password"},
        {"password": "a new password", "current_password": "!guest"},
        {"password": "a new password", "display_name": "Guest"},
    ):
        refused = await guest_client.patch(f"{API}/users/me", json=body, headers=guest)
        assert_problem(refused, 403, "guest_not_allowed")
    # Nothing changed: the same account, still without a password anyone can log in with.
    assert (await guest_client.get(f"{API}/users/me", headers=guest)).json() == before
    async with state.sessionmaker() as db:
        stored = await db.scalar(
            select(User.password_hash).where(User.id == uuid.UUID(before["id"]))
        )
    assert stored == GUEST_PASSWORD_HASH
    login = await guest_client.post(
        f"{API}/auth/token", data={"username": before["email"], "password": "a new password"}
    )
    assert_problem(login, 401, "unauthorized")
    # Its display name is still its own to change.
    renamed = await guest_client.patch(
        f"{API}/users/me", json={"display_name": "Guest"}, headers=guest
    )
    assert (renamed.status_code, renamed.json()["display_name"]) == (200, "Guest")


async def count_guests(state: AppState) -> int:
    async with state.sessionmaker() as db:
        query = select(func.count()).select_from(User).where(User.is_guest.is_(True))
        return int((await db.execute(query)).scalar_one())


async def test_reads_by_unknown_guests_create_no_rows(
    guest_client: httpx.AsyncClient, state: AppState
) -> None:
    client = guest_client
    for _ in range(30):
        guest = {"X-Client-ID": str(uuid.uuid4())}
        listed = await client.get(f"{API}/sessions", headers=guest)
        assert (listed.status_code, listed.json()["data"]) == (200, [])
        assert (await client.get(f"{API}/api-keys", headers=guest)).json()["data"] == []
        assert_problem(
            await client.get(f"{API}/sessions/{uuid.uuid4()}", headers=guest),
            404,
            "session_not_found",
        )
    # An unknown guest is an empty account, the same before and after its first write.
    guest = {"X-Client-ID": str(uuid.uuid4())}
    before = await client.get(f"{API}/users/me", headers=guest)
    assert before.status_code == 200, before.text
    assert await count_guests(state) == 0

    created = await client.post(f"{API}/sessions", json={"title": "first"}, headers=guest)
    assert created.status_code == 201
    assert await count_guests(state) == 1
    after = await client.get(f"{API}/users/me", headers=guest)
    assert after.json()["id"] == before.json()["id"]
    assert after.json()["email"] == before.json()["email"]
    assert [
        s["id"] for s in (await client.get(f"{API}/sessions", headers=guest)).json()["data"]
    ] == [created.json()["id"]]
    await client.post(f"{API}/sessions", json={"title": "second"}, headers=guest)
    assert await count_guests(state) == 1


async def test_new_guests_are_limited_per_client_ip(
    backend: Backend, app_with: AppWith, state: AppState
) -> None:
    async with app_with(
        allow_guests=True,
        rate_limit_enabled=True,
        guest_create_rate_limit="3/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    ) as guests_limited:
        client, guest_app = guests_limited.client, guests_limited.app
        guests = [{"X-Client-ID": str(uuid.uuid4())} for _ in range(4)]
        for guest in guests[:3]:
            created = await client.post(f"{API}/sessions", json={}, headers=guest)
            assert created.status_code == 201
        refused = await client.post(f"{API}/sessions", json={}, headers=guests[3])
        assert_problem(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
        assert await count_guests(state) == 3
        # Guests that exist go on writing, and a new guest may still read.
        again = await client.post(f"{API}/sessions", json={}, headers=guests[0])
        assert again.status_code == 201
        assert (await client.get(f"{API}/sessions", headers=guests[3])).status_code == 200
        # Another address has a budget of its own.
        transport = httpx.ASGITransport(app=guest_app, client=("10.9.8.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as elsewhere:
            created = await elsewhere.post(f"{API}/sessions", json={}, headers=guests[3])
            assert created.status_code == 201


async def test_reads_by_guests_without_a_row_are_limited_per_client_ip(
    backend: Backend, app_with: AppWith
) -> None:
    """A guest that has written nothing has no row, and any made-up client id is one: their
    reads share the budget of their address, not one budget per id."""
    async with app_with(
        allow_guests=True,
        rate_limit_enabled=True,
        rate_limit_read="3/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    ) as limited:
        client, guest_app = limited.client, limited.app
        statuses = [
            (
                await client.get(f"{API}/sessions", headers={"X-Client-ID": str(uuid.uuid4())})
            ).status_code
            for _ in range(4)
        ]
        # A guest with a row reads on its own budget, as a user does.
        saved = {"X-Client-ID": str(uuid.uuid4())}
        created = await client.post(f"{API}/sessions", json={}, headers=saved)
        own = (await client.get(f"{API}/sessions", headers=saved)).status_code
        # Another address has a budget of its own.
        transport = httpx.ASGITransport(app=guest_app, client=("10.9.8.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as elsewhere:
            other = await elsewhere.get(
                f"{API}/sessions", headers={"X-Client-ID": str(uuid.uuid4())}
            )

    assert statuses == [200, 200, 200, 429]
    assert created.status_code == 201 and own == 200
    assert other.status_code == 200


async def test_a_claim_keeps_a_conversation_both_imported_twice(
    guest_client: httpx.AsyncClient,
) -> None:
    """The import's fingerprint is unique per owner: the claim answered 500 and moved nothing
    when the guest and the user had imported the same conversation."""
    client = guest_client
    guest = {"X-Client-ID": str(uuid.uuid4())}
    conversation = {"title": "t", "messages": [{"role": "user", "content": "same words"}]}
    by_guest = await client.post(f"{API}/sessions/import", json=conversation, headers=guest)
    assert by_guest.status_code == 201, by_guest.text
    guest_copy = by_guest.json()["session"]["id"]
    grown = await client.post(
        f"{API}/sessions/{guest_copy}/messages",
        json={"role": "user", "content": "only the guest wrote this"},
        headers=guest,
    )
    assert grown.status_code == 201, grown.text
    account = await Factory(client).account()
    by_user = await client.post(
        f"{API}/sessions/import", json=conversation, headers=account.headers
    )
    assert by_user.status_code == 201, by_user.text
    user_copy = by_user.json()["session"]["id"]

    claim = await client.post(
        f"{API}/auth/claim", json={"client_id": guest["X-Client-ID"]}, headers=account.headers
    )

    assert claim.status_code == 200, claim.text
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert {item["id"] for item in listed.json()["data"]} == {guest_copy, user_copy}
    kept = await client.get(f"{API}/sessions/{guest_copy}/messages", headers=account.headers)
    assert [message["content"] for message in kept.json()["data"]] == [
        "same words",
        "only the guest wrote this",
    ]
    # Imported once more, the conversation is the user's own copy, not a third.
    again = await client.post(f"{API}/sessions/import", json=conversation, headers=account.headers)
    assert (again.status_code, again.json()["session"]["id"]) == (200, user_copy)
    # The claimed messages are the user's in search too.
    found = await client.get(f"{API}/search", params={"q": "guest wrote"}, headers=account.headers)
    assert [hit["session"]["id"] for hit in found.json()["data"]] == [guest_copy]


@pytest.mark.postgres_only
async def test_a_claim_waits_for_an_import_of_the_same_conversation_in_flight(
    app_with: AppWith,
) -> None:
    """An import of the user's that committed between the claim's clearing of shared
    fingerprints and its move broke the unique index: the claim answered 500. The claim now
    waits for the import, and keeps both copies as when the import came first."""
    async with app_with(allow_guests=True) as guests_allowed:
        client, state = guests_allowed.client, guests_allowed.state
        guest = {"X-Client-ID": str(uuid.uuid4())}
        conversation = {"title": "t", "messages": [{"role": "user", "content": "same words"}]}
        by_guest = await client.post(f"{API}/sessions/import", json=conversation, headers=guest)
        assert by_guest.status_code == 201, by_guest.text
        guest_copy = uuid.UUID(by_guest.json()["session"]["id"])
        account = await Factory(client).account()
        user_copy = uuid.uuid4()
        sessions = ChatSession.__table__
        async with state.sessionmaker() as importing:
            # The user's import of the same conversation, its session row inserted and not
            # committed yet (as an import in flight holds it).
            row = (
                await importing.execute(select(sessions).where(sessions.c.id == guest_copy))
            ).one()
            await importing.execute(
                insert(sessions).values(
                    {**row._asdict(), "id": user_copy, "user_id": uuid.UUID(account.user_id)}
                )
            )
            claim = asyncio.create_task(
                client.post(
                    f"{API}/auth/claim",
                    json={"client_id": guest["X-Client-ID"]},
                    headers=account.headers,
                )
            )
            await until_waiting_for_a_lock(state, claim)
            await importing.commit()
        claimed = await claim

        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["sessions_moved"] == 1
        async with state.sessionmaker() as db:
            owned = dict(
                (
                    await db.execute(
                        select(sessions.c.id, sessions.c.source_fingerprint).where(
                            sessions.c.user_id == uuid.UUID(account.user_id)
                        )
                    )
                ).all()
            )
        assert owned == {user_copy: row.source_fingerprint, guest_copy: None}
