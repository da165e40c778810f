"""Bodies that are not well-formed JSON objects, values of the wrong type, unknown fields and
path ids that are no uuids: 422, never a 500, never stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from chat_store.api.deps import AppState
from tests.assertions import assert_validation_error
from tests.factories import API, JSON, SESSIONS, Account, Factory, session_titles


async def targets(factory: Factory, account: Account) -> list[tuple[str, str]]:
    """(method, url) of every route that takes a JSON body, for one account."""
    session = await factory.chat_session(account, title="kept")
    return [
        ("POST", SESSIONS),
        ("PATCH", f"{SESSIONS}/{session['id']}"),
        ("PUT", f"{SESSIONS}/{session['id']}"),
        ("PATCH", f"{SESSIONS}/{session['id']}/favorite"),
        ("POST", f"{API}/api-keys"),
        ("PATCH", f"{API}/users/me"),
        ("POST", f"{API}/auth/register"),
        ("POST", f"{API}/auth/refresh"),
        ("POST", f"{API}/auth/logout"),
    ]


@pytest.mark.parametrize(
    "raw",
    [b'{"title": ', b"{'title': 'x'}", b'{"title": "x",}', b"not json", b'{"title": "x"} extra'],
    ids=["truncated", "single-quotes", "trailing-comma", "bare-word", "trailing-data"],
)
async def test_malformed_json_is_a_validation_error(
    client: httpx.AsyncClient, factory: Factory, raw: bytes
) -> None:
    account = await factory.account()

    for method, url in await targets(factory, account):
        response = await client.request(
            method, url, content=raw, headers={**account.headers, **JSON}
        )
        body = assert_validation_error(response, "body")
        assert body["detail"] == "The request body is not valid JSON"
        assert body["errors"][0]["type"] == "json_invalid"

    assert await session_titles(client, account) == ["kept"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "caf\xe9"}',
        b'{"title": "\xff\xfe"}',
        b'{"metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["latin-1", "invalid-bytes", "nested-beyond-the-parser"],
)
async def test_a_body_that_cannot_be_decoded_is_malformed_json(
    client: httpx.AsyncClient, factory: Factory, raw: bytes
) -> None:
    account = await factory.account()

    response = await client.post(SESSIONS, content=raw, headers={**account.headers, **JSON})

    body = assert_validation_error(response, "body")
    assert body["detail"] == "The request body is not valid JSON"
    assert await session_titles(client, account) == []


async def test_a_utf8_encoded_surrogate_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    response = await client.post(
        SESSIONS, content=b'{"title": "\xed\xa0\x80"}', headers={**account.headers, **JSON}
    )

    assert_validation_error(response, "body")
    assert await session_titles(client, account) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": 5}, "title"),
        ({"title": ["a"]}, "title"),
        ({"metadata": "text"}, "metadata"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"workspace": "github.com/acme/api"}, "workspace"),
        ({"workspace": {"repo": 7}}, "workspace"),
        ({"id": 12}, "id"),
        ({"id": "not-a-uuid"}, "id"),
    ],
)
async def test_wrong_types_in_a_create_are_refused(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    account = await factory.account()

    response = await client.post(SESSIONS, json=body, headers=account.headers)

    assert_validation_error(response, "body", field)
    assert await session_titles(client, account) == []


@pytest.mark.parametrize("body", [[], "title", 5, None])
async def test_a_body_that_is_not_an_object_is_refused(
    client: httpx.AsyncClient, factory: Factory, body: Any
) -> None:
    account = await factory.account()

    response = await client.post(
        SESSIONS, content=json.dumps(body).encode(), headers={**account.headers, **JSON}
    )

    assert_validation_error(response, "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"is_favorite": "maybe"}, "is_favorite"),
        ({"is_favorite": 2}, "is_favorite"),
        ({"status": 1}, "status"),
        ({"title": {"text": "x"}}, "title"),
    ],
)
async def test_wrong_types_in_an_update_are_refused(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="kept")

    response = await client.patch(f"{SESSIONS}/{session['id']}", json=body, headers=account.headers)

    assert_validation_error(response, "body", field)
    stored = await client.get(f"{SESSIONS}/{session['id']}", headers=account.headers)
    assert stored.json() == session


async def test_unknown_fields_are_refused_by_name(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()

    for method, url in await targets(factory, account):
        response = await client.request(
            method, url, json={"surprise_field": 1}, headers=account.headers
        )
        body = assert_validation_error(response, "body", "surprise_field")
        assert "surprise_field" in body["detail"]

    created = await client.post(SESSIONS, json={"titel": "typo"}, headers=account.headers)
    assert_validation_error(created, "body", "titel")
    nested = await client.post(
        SESSIONS, json={"workspace": {"repo": "r", "commit": "abc"}}, headers=account.headers
    )
    assert_validation_error(nested, "body", "workspace", "commit")
    assert await session_titles(client, account) == ["kept"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "12345", "0190c8a0-0000-7000-8000-00000000000"])
async def test_ids_in_the_path_must_be_uuids(
    client: httpx.AsyncClient, factory: Factory, bad_id: str
) -> None:
    account = await factory.account()

    for method, url, field in [
        ("GET", f"{SESSIONS}/{bad_id}", "session_id"),
        ("PATCH", f"{SESSIONS}/{bad_id}", "session_id"),
        ("PUT", f"{SESSIONS}/{bad_id}", "session_id"),
        ("DELETE", f"{SESSIONS}/{bad_id}", "session_id"),
        ("PATCH", f"{SESSIONS}/{bad_id}/favorite", "session_id"),
        ("DELETE", f"{API}/api-keys/{bad_id}", "key_id"),
    ]:
        body = {"title": "x"} if method in ("PATCH", "PUT") else None
        response = await client.request(method, url, json=body, headers=account.headers)
        assert_validation_error(response, "path", field)
