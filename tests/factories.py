"""Factories that build test data through the public API (so they exercise the real paths)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

API = "/api/v1"
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
