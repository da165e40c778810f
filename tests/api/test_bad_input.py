"""Input the service refuses: 422 (or 413 for size), never a 500, never stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chat_store.api.deps import AppState
from tests.assertions import assert_problem, assert_validation_error
from tests.factories import API, Account, Factory

SESSIONS = f"{API}/sessions"
JSON = {"Content-Type": "application/json"}


async def session_titles(client: httpx.AsyncClient, account: Account) -> list[str | None]:
    listed = await client.get(SESSIONS, headers=account.headers)
    return [s["title"] for s in listed.json()["data"]]


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


# --- malformed JSON and wrong shapes


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


# --- sizes


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


# --- NUL and lone surrogates: Postgres cannot store them, JSON cannot carry them


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


BEYOND_INT32 = 2**31  # seqs, versions and lengths are stored as 4-byte integers


async def test_an_expected_seq_beyond_what_is_stored_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = f"{SESSIONS}/{session['id']}/messages"
    one = {"role": "user", "content": "hi"}

    single = await client.post(
        messages, json={**one, "expected_last_seq": BEYOND_INT32}, headers=account.headers
    )
    batch = await client.post(
        f"{messages}/batch",
        json={"messages": [one], "expected_last_seq": BEYOND_INT32},
        headers=account.headers,
    )
    largest = await client.post(
        messages, json={**one, "expected_last_seq": BEYOND_INT32 - 1}, headers=account.headers
    )

    assert_validation_error(single, "body", "expected_last_seq")
    assert_validation_error(batch, "body", "expected_last_seq")
    assert assert_problem(largest, 409, "seq_conflict")["last_seq"] == 0
    listed = await client.get(messages, headers=account.headers)
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    ("path", "query", "headers", "loc"),
    [
        ("/messages", {"after_seq": BEYOND_INT32}, {}, ("query", "after_seq")),
        ("/messages", {"before_seq": BEYOND_INT32}, {}, ("query", "before_seq")),
        ("/events", {"after_version": BEYOND_INT32}, {}, ("query", "after_version")),
        ("/events", {}, {"Last-Event-ID": str(BEYOND_INT32)}, ("header", "Last-Event-ID")),
        ("/messages/{message}/stream", {"offset": BEYOND_INT32}, {}, ("query", "offset")),
    ],
)
async def test_a_cursor_beyond_what_is_stored_is_refused(
    client: httpx.AsyncClient,
    factory: Factory,
    path: str,
    query: dict[str, int],
    headers: dict[str, str],
    loc: tuple[str, str],
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"], role="assistant", status="pending")
    url = f"{SESSIONS}/{session['id']}" + path.format(message=message["id"])

    answer = await client.get(url, params=query, headers={**account.headers, **headers})

    assert_validation_error(answer, *loc)
