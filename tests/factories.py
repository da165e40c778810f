"""Factories that build test data through the public API (so they exercise the real paths)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

API = "/api/v1"
SESSIONS = f"{API}/sessions"
ME = f"{API}/users/me"
JSON = {"Content-Type": "application/json"}
_counter = itertools.count(1)


@dataclass
class Account:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Factory:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def account(
        self, *, email: str | None = None, password: str = "pw-" + "s" * 10
    ) -> Account:
        email = email or f"user{next(_counter)}@example.com"
        registered = await self.client.post(
            f"{API}/auth/register", json={"email": email, "password": password}
        )
        assert registered.status_code == 201, registered.text
        tokens = await self.login(email, password)
        return Account(
            user_id=registered.json()["id"],
            email=email,
            password=password,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
        )

    async def login(self, email: str, password: str) -> dict[str, Any]:
        response = await self.client.post(
            f"{API}/auth/token", data={"username": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def api_key(self, account: Account, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            f"{API}/api-keys", json={"name": "test key", **body}, headers=account.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def chat_session(self, account: Account, **body: Any) -> dict[str, Any]:
        response = await self.client.post(f"{API}/sessions", json=body, headers=account.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def message(self, account: Account, session_id: str, **body: Any) -> dict[str, Any]:
        """One appended message: a complete user message unless the body says otherwise."""
        payload: dict[str, Any] = {"role": "user", **body}
        if payload.get("status", "complete") == "complete":
            payload.setdefault("content", f"message {next(_counter)}")
        response = await self.client.post(
            f"{API}/sessions/{session_id}/messages", json=payload, headers=account.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def messages(
        self, account: Account, session_id: str, count: int, **body: Any
    ) -> list[dict[str, Any]]:
        """`count` complete messages appended in batches, with contents "m1", "m2", ..."""
        created: list[dict[str, Any]] = []
        while len(created) < count:
            batch = [
                {"role": "user", "content": f"m{len(created) + i + 1}", **body}
                for i in range(min(100, count - len(created)))
            ]
            response = await self.client.post(
                f"{API}/sessions/{session_id}/messages/batch",
                json={"messages": batch},
                headers=account.headers,
            )
            assert response.status_code == 201, response.text
            created.extend(response.json()["data"])
        return created


async def session_titles(client: httpx.AsyncClient, account: Account) -> list[str | None]:
    """The titles of the account's sessions, newest first: what a refused write left behind."""
    listed = await client.get(SESSIONS, headers=account.headers)
    return [s["title"] for s in listed.json()["data"]]
