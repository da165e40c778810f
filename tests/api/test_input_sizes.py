"""Sizes: titles, metadata and request bodies over their limits (422, or 413 for a body),
the limits being the app's settings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from chat_store.api.deps import AppState
from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import AppWith
from tests.factories import API, JSON, SESSIONS, Factory, session_titles


async def test_title_up_to_200_characters(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    longest = "é" * 200  # characters, not bytes

    created = await client.post(SESSIONS, json={"title": longest}, headers=account.headers)
    assert created.status_code == 201, created.text
    assert created.json()["title"] == longest
    url = f"{SESSIONS}/{created.json()['id']}"

    too_long = "t" * 201
    assert_validation_error(
        await client.post(SESSIONS, json={"title": too_long}, headers=account.headers),
        "body",
        "title",
    )
    assert_validation_error(
        await client.patch(url, json={"title": too_long}, headers=account.headers), "body", "title"
    )
    assert_validation_error(
        await client.put(url, json={"title": too_long}, headers=account.headers), "body", "title"
    )
    assert await session_titles(client, account) == [longest]


async def test_metadata_up_to_16_kib_of_json(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    # {"k":"..."} written compactly is 8 bytes plus the value.
    fits = {"k": "x" * (16 * 1024 - 8)}
    over = {"k": "x" * (16 * 1024 - 7)}

    created = await client.post(SESSIONS, json={"metadata": fits}, headers=account.headers)
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == fits
    url = f"{SESSIONS}/{created.json()['id']}"

    body = assert_validation_error(
        await client.post(SESSIONS, json={"metadata": over}, headers=account.headers),
        "body",
        "metadata",
    )
    assert "16384" in body["detail"]
    assert_validation_error(
        await client.patch(url, json={"metadata": over}, headers=account.headers),
        "body",
        "metadata",
    )
    # Counted in UTF-8 bytes: 8193 two-byte characters are over.
    wide = {"k": "é" * 8189}
    assert_validation_error(
        await client.post(SESSIONS, json={"metadata": wide}, headers=account.headers),
        "body",
        "metadata",
    )
    stored = await client.get(url, headers=account.headers)
    assert stored.json()["metadata"] == fits


async def test_a_body_over_the_limit_is_refused_by_its_content_length(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    limit = state.settings.max_body_bytes
    raw = json.dumps({"title": "x" * (limit + 1)}).encode()

    response = await client.post(SESSIONS, content=raw, headers={**account.headers, **JSON})

    body = assert_problem(response, 413, "payload_too_large")
    assert str(limit) in body["detail"]
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert await session_titles(client, account) == []


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    declared = state.settings.max_body_bytes + 1
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read += 1
        yield b"x" * declared

    response = await client.post(
        SESSIONS,
        content=body(),
        headers={**account.headers, **JSON, "Content-Length": str(declared)},
    )

    assert_problem(response, 413, "payload_too_large")
    assert read == 0
    # One byte under the limit is read (and then judged on its content).
    small = await client.post(
        SESSIONS,
        content=b"x" * (state.settings.max_body_bytes - 1),
        headers={**account.headers, **JSON},
    )
    assert_validation_error(small, "body")


async def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    limit = state.settings.max_body_bytes
    chunk = 64 * 1024
    total_chunks = 2 * limit // chunk  # twice the limit
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        sent += 1
        yield b'{"title": "'
        for _ in range(total_chunks):
            sent += 1
            yield b"x" * chunk
        yield b'"}'

    response = await client.post(SESSIONS, content=body(), headers={**account.headers, **JSON})

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")
    # Reading stopped just past the limit, not at the end of the body.
    assert sent <= limit // chunk + 2
    assert await session_titles(client, account) == []


async def test_a_chunked_body_under_the_limit_is_read(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    async def body() -> AsyncIterator[bytes]:
        for part in (b'{"title": ', b'"in ', b'pieces"}'):
            yield part

    response = await client.post(SESSIONS, content=body(), headers={**account.headers, **JSON})

    assert response.status_code == 201, response.text
    assert response.json()["title"] == "in pieces"


async def test_body_limits_come_from_the_app_settings(app_with: AppWith) -> None:
    async with app_with(max_title_chars=10, max_metadata_bytes=64) as small:
        client = small.client
        account = await small.factory.account()
        sessions = f"{API}/sessions"
        too_long = await client.post(sessions, json={"title": "x" * 11}, headers=account.headers)
        assert too_long.status_code == 422
        assert too_long.json()["detail"] == (
            "body.title: Value error, title is 11 characters, over the limit of 10"
        )
        assert too_long.json()["errors"] == [
            {
                "loc": ["body", "title"],
                "msg": "Value error, title is 11 characters, over the limit of 10",
                "type": "value_error",
            }
        ]
        big = await client.post(
            sessions, json={"metadata": {"k": "v" * 80}}, headers=account.headers
        )
        assert big.status_code == 422
        fits = await client.post(sessions, json={"title": "x" * 10}, headers=account.headers)
        assert fits.status_code == 201
