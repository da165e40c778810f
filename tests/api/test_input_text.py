"""Text that Postgres cannot store or JSON cannot carry: NUL, lone surrogates, NaN and
Infinity (a surrogate pair is a character like any other)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.assertions import assert_validation_error
from tests.factories import API, JSON, SESSIONS, Factory, session_titles


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"title": "a\x00b"}, ("body", "title")),
        ({"metadata": {"key": "a\x00b"}}, ("body", "metadata")),
        ({"metadata": {"k\x00y": "value"}}, ("body", "metadata")),
        ({"metadata": {"deep": [{"x": ["ok", "\x00"]}]}}, ("body", "metadata")),
        ({"workspace": {"repo": "r\x00"}}, ("body", "workspace", "repo")),
    ],
    ids=["title", "metadata-value", "metadata-key", "metadata-nested", "workspace"],
)
async def test_nul_in_a_session_is_refused(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="kept")

    created = await client.post(SESSIONS, json=body, headers=account.headers)
    updated = await client.patch(f"{SESSIONS}/{session['id']}", json=body, headers=account.headers)

    assert "NUL" in assert_validation_error(created, *loc)["detail"]
    assert_validation_error(updated, *loc)
    assert await session_titles(client, account) == ["kept"]


async def test_nul_elsewhere_is_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()

    for method, url, kwargs, loc in [
        ("POST", f"{API}/api-keys", {"json": {"name": "a\x00b"}}, ("body", "name")),
        ("PATCH", f"{API}/users/me", {"json": {"display_name": "a\x00b"}}, ("body",)),
        ("PUT", None, {"json": {"title": "a\x00b"}}, ("body", "title")),
        ("GET", SESSIONS, {"params": {"q": "a\x00b"}}, ("query", "q")),
        ("GET", SESSIONS, {"params": {"repo": "a\x00b"}}, ("query", "repo")),
        (
            "POST",
            f"{API}/auth/register",
            {"json": {"email": "nul@example.com", "password": "pass\x00word"}},
            ("body", "password"),
        ),
        (
            "POST",
            f"{API}/auth/token",
            {"data": {"username": "a\x00b@example.com", "password": "password"}},
            ("body", "username"),
        ),
        (
            "POST",
            f"{API}/auth/refresh",
            {"json": {"refresh_token": "a\x00b"}},
            ("body", "refresh_token"),
        ),
    ]:
        if url is None:
            url = f"{SESSIONS}/{(await factory.chat_session(account))['id']}"
        response = await client.request(method, url, headers=account.headers, **kwargs)
        assert_validation_error(response, *loc)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "\\ud800"}',
        b'{"title": "a\\udc00b"}',
        b'{"metadata": {"k": "\\ud800"}}',
        b'{"metadata": {"\\ud800": 1}}',
        b'{"metadata": {"list": ["\\udfff"]}}',
        b'{"workspace": {"branch": "\\ud800"}}',
    ],
    ids=["title", "title-low", "metadata-value", "metadata-key", "metadata-list", "workspace"],
)
async def test_a_lone_surrogate_is_refused(
    client: httpx.AsyncClient, factory: Factory, raw: bytes
) -> None:
    account = await factory.account()

    response = await client.post(SESSIONS, content=raw, headers={**account.headers, **JSON})

    assert_validation_error(response, "body")
    assert await session_titles(client, account) == []


async def test_a_lone_surrogate_in_an_unknown_field_name_is_a_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    for raw in (b'{"\\ud800": 1}', b'{"title": "t", "x\\udc00y": true}'):
        response = await client.post(SESSIONS, content=raw, headers={**account.headers, **JSON})
        assert_validation_error(response, "body")  # and the answer is valid JSON

    assert await session_titles(client, account) == []


async def test_a_surrogate_pair_is_a_character_like_any_other(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    response = await client.post(
        SESSIONS,
        content=b'{"title": "\\ud83d\\ude00", "metadata": {"\\ud83d\\ude00": "\\ud83d\\ude00"}}',
        headers={**account.headers, **JSON},
    )

    assert response.status_code == 201, response.text
    stored = await client.get(f"{SESSIONS}/{response.json()['id']}", headers=account.headers)
    assert stored.json()["title"] == "\N{GRINNING FACE}"
    assert stored.json()["metadata"] == {"\N{GRINNING FACE}": "\N{GRINNING FACE}"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["metadata", "context"])
async def test_nan_and_infinity_in_json_fields_are_refused(
    client: httpx.AsyncClient, factory: Factory, number: str, field: str
) -> None:
    """Python's JSON parser takes them, JSON and the database's JSON type do not."""
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = f"{SESSIONS}/{session['id']}/messages"
    raw = f'{{"role": "user", "content": "hi", "{field}": {{"score": {number}}}}}'.encode()

    answer = await client.post(messages, content=raw, headers={**JSON, **account.headers})

    body = assert_validation_error(answer, "body", field)
    assert "NaN or Infinity" in body["detail"]
    listed = await client.get(messages, headers=account.headers)
    assert listed.json()["data"] == []
