"""Who may reach the message routes: 401 without credentials, 404 (never 403) for anything the
caller does not own, and 404 for a message addressed through another session of the same user.
A refused request changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.assertions import assert_problem
from tests.factories import API, Account, Factory


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # relative to /sessions/{sid}; "{mid}" is a message id
    body: dict[str, Any] | None = None

    @property
    def takes_message(self) -> bool:
        return "{mid}" in self.path or "{mid}" in str(self.body)

    def request(
        self, client: httpx.AsyncClient, sid: str, mid: str, headers: dict[str, str]
    ) -> Any:
        body = None
        if self.body is not None:
            body = {
                key: value.replace("{mid}", mid) if isinstance(value, str) else value
                for key, value in self.body.items()
            }
        url = f"{API}/sessions/{sid}{self.path.replace('{mid}', mid)}"
        return client.request(self.method, url, json=body, headers=headers)


ENDPOINTS = {
    "append": Endpoint("POST", "/messages", {"role": "user", "content": "hi"}),
    "batch": Endpoint("POST", "/messages/batch", {"messages": [{"role": "user", "content": "hi"}]}),
    "list": Endpoint("GET", "/messages"),
    "list_after": Endpoint("GET", "/messages?after={mid}"),
    "get": Endpoint("GET", "/messages/{mid}"),
    "patch": Endpoint("PATCH", "/messages/{mid}", {"metadata": {"changed": True}}),
    "delta": Endpoint("POST", "/messages/{mid}/append", {"delta": "more", "offset": 0}),
    "resume": Endpoint("POST", "/resume"),
    "fork": Endpoint("POST", "/fork", {"message_id": "{mid}"}),
    "context": Endpoint("GET", "/context?max_tokens=1000"),
    "delete": Endpoint("DELETE", "/messages/{mid}"),
}
MESSAGE_ENDPOINTS = {name: e for name, e in ENDPOINTS.items() if e.takes_message}


@dataclass
class World:
    owner: Account
    intruder: Account
    # The owner's two sessions and one open (pending) assistant message in each, so that
    # every route, the delta append and resume included, would succeed for the owner.
    session_a: str
    message_a: str
    session_b: str
    message_b: str
    intruder_session: str
    intruder_message: str


async def _seed(factory: Factory, account: Account) -> tuple[str, str]:
    session = await factory.chat_session(account, title="seeded")
    await factory.message(account, session["id"], content="question")
    message = await factory.message(account, session["id"], role="assistant", status="pending")
    return session["id"], message["id"]


@pytest.fixture
async def world(factory: Factory) -> World:
    owner = await factory.account()
    intruder = await factory.account()
    session_a, message_a = await _seed(factory, owner)
    session_b, message_b = await _seed(factory, owner)
    intruder_session, intruder_message = await _seed(factory, intruder)
    return World(
        owner,
        intruder,
        session_a,
        message_a,
        session_b,
        message_b,
        intruder_session,
        intruder_message,
    )


async def _everything(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    """All that the account can see: its sessions and every message in them."""
    sessions = await client.get(f"{API}/sessions?limit=100", headers=account.headers)
    assert sessions.status_code == 200, sessions.text
    seen: dict[str, Any] = {}
    for session in sessions.json()["data"]:
        messages = await client.get(
            f"{API}/sessions/{session['id']}/messages?limit=100", headers=account.headers
        )
        assert messages.status_code == 200, messages.text
        seen[session["id"]] = {"session": session, "messages": messages.json()["data"]}
    return seen


async def _snapshot(client: httpx.AsyncClient, world: World) -> list[dict[str, Any]]:
    return [await _everything(client, world.owner), await _everything(client, world.intruder)]


async def test_without_credentials_is_401_and_changes_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    before = await _snapshot(client, world)
    for name, endpoint in ENDPOINTS.items():
        response = await endpoint.request(client, world.session_a, world.message_a, {})
        assert response.status_code == 401, (name, response.text)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert await _snapshot(client, world) == before, name


async def test_another_users_session_is_404_and_changes_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    before = await _snapshot(client, world)
    for name, endpoint in ENDPOINTS.items():
        response = await endpoint.request(
            client, world.session_a, world.message_a, world.intruder.headers
        )
        assert response.status_code == 404, (name, response.text)
        assert_problem(response, 404, "session_not_found")
        assert await _snapshot(client, world) == before, name


async def test_another_users_message_in_own_session_is_404(
    client: httpx.AsyncClient, world: World
) -> None:
    before = await _snapshot(client, world)
    for name, endpoint in MESSAGE_ENDPOINTS.items():
        response = await endpoint.request(
            client, world.intruder_session, world.message_a, world.intruder.headers
        )
        assert response.status_code == 404, (name, response.text)
        assert_problem(response, 404, "message_not_found")
        assert await _snapshot(client, world) == before, name


async def test_message_of_another_session_of_the_same_user_is_404(
    client: httpx.AsyncClient, world: World
) -> None:
    before = await _snapshot(client, world)
    for name, endpoint in MESSAGE_ENDPOINTS.items():
        response = await endpoint.request(
            client, world.session_a, world.message_b, world.owner.headers
        )
        assert response.status_code == 404, (name, response.text)
        assert_problem(response, 404, "message_not_found")
        assert await _snapshot(client, world) == before, name


async def test_the_owner_gets_through(client: httpx.AsyncClient, world: World) -> None:
    """The refusals above are about ownership: the same requests succeed for the owner
    (in an order where each still can: the deletion last)."""
    for name, endpoint in ENDPOINTS.items():
        response = await endpoint.request(
            client, world.session_a, world.message_a, world.owner.headers
        )
        assert response.status_code in {200, 201}, (name, response.text)


async def test_missing_session_and_message_are_404_like_foreign_ones(
    client: httpx.AsyncClient, world: World
) -> None:
    missing = "0190a6e0-0000-7000-8000-000000000000"
    response = await client.get(f"{API}/sessions/{missing}/messages", headers=world.owner.headers)
    assert_problem(response, 404, "session_not_found")
    response = await client.get(
        f"{API}/sessions/{world.session_a}/messages/{missing}", headers=world.owner.headers
    )
    assert_problem(response, 404, "message_not_found")
