"""Who may search what: 401 without credentials, only ever the caller's own messages and titles,
404 for a session filter that is not the caller's, whichever way the caller signs in."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.assertions import assert_problem
from tests.conftest import AppWith
from tests.factories import API, Account, Factory

SECRET = "okapi_ledger rotates the signing keys"


async def _seed(factory: Factory, account: Account, title: str) -> dict[str, Any]:
    session = await factory.chat_session(account, title=title)
    await factory.message(account, session["id"], content=SECRET)
    return session


async def _hits(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(f"{API}/search", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/search", params={"q": "okapi"})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_only_the_callers_messages_and_titles_are_found(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    other = await factory.account()
    owners = await _seed(factory, owner, "okapi ledger owner")
    others = await _seed(factory, other, "okapi ledger other")

    for account, session in ((owner, owners), (other, others)):
        page = await _hits(client, account.headers, q="okapi_ledger")
        assert {hit["session"]["id"] for hit in page["data"]} == {session["id"]}
        titles = await _hits(client, account.headers, q="okapi ledger")
        assert {hit["session"]["id"] for hit in titles["data"]} == {session["id"]}
        assert len(titles["data"]) == 2  # the title and the message


async def test_owners_whose_ids_end_alike_find_only_their_own(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Their messages share an index (SQLite: the FTS5 table of the ids' last hex digit), which
    narrows the lookup only: each still finds only its own."""
    by_digit: dict[str, Account] = {}
    while True:  # at most 17 accounts: 16 digits
        account = await factory.account()
        first = by_digit.setdefault(uuid.UUID(account.user_id).hex[-1], account)
        if first is not account:
            break
    sessions = [await _seed(factory, owner, "okapi ledger") for owner in (first, account)]

    for owner, session in zip((first, account), sessions, strict=True):
        page = await _hits(client, owner.headers, q="okapi_ledger rotates")
        assert [hit["session"]["id"] for hit in page["data"]] == [session["id"]]
        phrase = await _hits(client, owner.headers, q='"signing keys"')
        assert [hit["session"]["id"] for hit in phrase["data"]] == [session["id"]]


async def test_another_users_session_as_filter_is_404_like_a_missing_one(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    intruder = await factory.account()
    session = await _seed(factory, owner, "private")
    missing = "0190a6e0-0000-7000-8000-000000000000"

    for session_id in (session["id"], missing):
        response = await client.get(
            f"{API}/search",
            params={"q": "okapi", "session_id": session_id},
            headers=intruder.headers,
        )
        assert_problem(response, 404, "session_not_found")


async def test_a_cursor_does_not_open_another_users_hits(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    intruder = await factory.account()
    session = await factory.chat_session(owner, title="t")
    await factory.messages(owner, session["id"], 3, content=SECRET)
    cursor = (await _hits(client, owner.headers, q="okapi", limit=1))["next_cursor"]

    page = await _hits(client, intruder.headers, q="okapi", cursor=cursor)

    assert page["data"] == []


async def test_an_api_key_searches_as_its_user(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.account()
    session = await _seed(factory, owner, "keyed")
    key = await factory.api_key(owner)

    page = await _hits(client, {"X-API-Key": key["key"]}, q="okapi_ledger")

    assert [hit["session"]["id"] for hit in page["data"]] == [session["id"]]


async def test_deleting_the_user_removes_what_is_found(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    await _seed(factory, owner, "doomed")
    key = await factory.api_key(owner)
    response = await client.delete(f"{API}/users/me", headers=owner.headers)
    assert response.status_code == 204, response.text

    response = await client.get(
        f"{API}/search", params={"q": "okapi"}, headers={"X-API-Key": key["key"]}
    )
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize("claim", [False, True])
async def test_a_guest_finds_its_own_and_a_claim_moves_them(app_with: AppWith, claim: bool) -> None:
    async with app_with(allow_guests=True) as guests_allowed:
        client, factory = guests_allowed.client, guests_allowed.factory
        guest = {"X-Client-ID": str(uuid.uuid4())}
        response = await client.post(f"{API}/sessions", json={"title": "guest"}, headers=guest)
        assert response.status_code == 201, response.text
        session_id = response.json()["id"]
        response = await client.post(
            f"{API}/sessions/{session_id}/messages",
            json={"role": "user", "content": SECRET},
            headers=guest,
        )
        assert response.status_code == 201, response.text
        stranger = await factory.account()

        assert len((await _hits(client, guest, q="okapi_ledger"))["data"]) == 1
        assert (await _hits(client, stranger.headers, q="okapi_ledger"))["data"] == []
        if claim:
            response = await client.post(
                f"{API}/auth/claim",
                json={"client_id": guest["X-Client-ID"]},
                headers=stranger.headers,
            )
            assert response.status_code == 200, response.text
            page = await _hits(client, stranger.headers, q="okapi_ledger")
            assert [hit["session"]["id"] for hit in page["data"]] == [session_id]
