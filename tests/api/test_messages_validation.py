"""What a message create refuses: bad roles and statuses, content that does not fit the status,
unsafe text, unknown fields, and text over MAX_MESSAGE_BYTES (counted in UTF-8 bytes)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import SMALL_MESSAGE_BYTES
from tests.factories import API, Account, Factory

LIMIT = SMALL_MESSAGE_BYTES  # of the `small` app


async def _post_raw(
    client: httpx.AsyncClient, url: str, body: str, account: Account
) -> httpx.Response:
    """Exact bytes on the wire: the UTF-8 text unescaped, so its size is what is measured."""
    return await client.post(
        url,
        content=body.encode("utf-8", "surrogatepass"),
        headers={**account.headers, "Content-Type": "application/json"},
    )


async def _stored(client: httpx.AsyncClient, account: Account, session_id: str) -> list[Any]:
    response = await client.get(
        f"{API}/sessions/{session_id}/messages?limit=100", headers=account.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"role": "narrator", "content": "x"}, ("body", "role")),
        ({"content": "x"}, ("body", "role")),
        ({"role": "user", "content": "x", "status": "done"}, ("body", "status")),
        ({"role": "user"}, ("body",)),  # complete without content
        ({"role": "user", "content": None}, ("body",)),
        ({"role": "assistant", "status": "pending", "content": "x"}, ("body",)),
        ({"role": "assistant", "status": "in_progress", "content": "x"}, ("body",)),
        ({"role": "assistant", "content": "x", "partial_content": "x"}, ("body",)),
        (
            {"role": "assistant", "status": "pending", "content": "x", "partial_content": "x"},
            ("body",),
        ),
        ({"role": "user", "content": "x", "error_message": "only when failed"}, ("body",)),
        ({"role": "user", "content": "nul \x00 inside"}, ("body", "content")),
        (
            {"role": "assistant", "status": "pending", "partial_content": "\x00"},
            ("body", "partial_content"),
        ),
        ({"role": "user", "content": "x", "metadata": {"k": "nul\x00"}}, ("body", "metadata")),
        ({"role": "user", "content": "x", "metadata": {"nul\x00key": 1}}, ("body", "metadata")),
        ({"role": "user", "content": "x", "context": {"docs": ["\x00"]}}, ("body", "context")),
        ({"role": "user", "content": "x", "metadata": None}, ("body", "metadata")),
        ({"role": "user", "content": "x", "token_count": -1}, ("body", "token_count")),
        ({"role": "user", "content": "x", "colour": "blue"}, ("body", "colour")),
        ({"role": "user", "content": "x", "id": "not-a-uuid"}, ("body", "id")),
        ({"role": "user", "content": "x", "expected_last_seq": -1}, ("body", "expected_last_seq")),
    ],
)
async def test_invalid_message_is_422_and_stores_nothing(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    assert_validation_error(await client.post(url, json=body, headers=account.headers), *loc)
    batch = {"messages": [{"role": "user", "content": "fine"}, body]}
    batch_response = await client.post(f"{url}/batch", json=batch, headers=account.headers)
    assert_validation_error(batch_response, "body", "messages")
    assert await _stored(client, account, session["id"]) == []
    assert (await factory.message(account, session["id"]))["seq"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        '{"role": "user", "content": "lone \\ud800 surrogate"}',
        '{"role": "user", "content": "x", "metadata": {"k": "\\udfff"}}',
        '{"role": "user", "content": ',
    ],
)
async def test_unsafe_or_malformed_json_is_422(
    client: httpx.AsyncClient, factory: Factory, raw: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    assert_validation_error(await _post_raw(client, url, raw, account))
    assert await _stored(client, account, session["id"]) == []


@pytest.mark.parametrize(
    ("unit", "count"),
    [
        ("a", LIMIT),  # 1 byte each
        ("é", LIMIT // 2),  # 2 bytes each
        ("€", LIMIT // 3),  # 3 bytes each, 999 bytes
        ("😀", LIMIT // 4),  # 4 bytes each
    ],
)
async def test_size_limit_counts_utf8_bytes(
    small: httpx.AsyncClient, factory: Factory, unit: str, count: int
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    at_limit = unit * count + "a" * (LIMIT - len((unit * count).encode()))
    assert len(at_limit.encode()) == LIMIT

    accepted = await small.post(
        url, json={"role": "user", "content": at_limit}, headers=account.headers
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["content"] == at_limit

    over = at_limit + "a"  # fewer characters than LIMIT, one byte too many
    assert len(over) <= LIMIT + 1
    refused = await small.post(url, json={"role": "user", "content": over}, headers=account.headers)
    # Each refusal names the field as its request names it.
    assert assert_problem(refused, 413, "payload_too_large")["detail"].startswith("content ")
    streamed = {"role": "assistant", "status": "pending", "partial_content": over}
    refused = await small.post(url, json=streamed, headers=account.headers)
    detail = assert_problem(refused, 413, "payload_too_large")["detail"]
    assert detail.startswith("partial_content ")
    batch = {"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": over}]}
    refused = await small.post(f"{url}/batch", json=batch, headers=account.headers)
    detail = assert_problem(refused, 413, "payload_too_large")["detail"]
    assert detail.startswith("messages[1].content ")

    stored = await _stored(small, account, session["id"])
    assert [m["content"] for m in stored] == [at_limit]
    assert (await factory.message(account, session["id"]))["seq"] == 2


async def test_size_limit_applies_to_updates(small: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"], role="assistant", status="pending")
    url = f"{API}/sessions/{session['id']}/messages/{message['id']}"
    over = "é" * (LIMIT // 2) + "a"
    refused = await small.patch(url, json={"partial_content": over}, headers=account.headers)
    assert_problem(refused, 413, "payload_too_large")
    refused = await small.patch(
        url, json={"status": "complete", "content": over}, headers=account.headers
    )
    assert_problem(refused, 413, "payload_too_large")
    unchanged = await small.get(url, headers=account.headers)
    assert unchanged.json() == message

    at_limit = over[:-1]
    done = await small.patch(
        url, json={"status": "complete", "content": at_limit}, headers=account.headers
    )
    assert done.status_code == 200, done.text
    assert done.json()["content"] == at_limit


async def test_default_limit_is_one_mebibyte(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    mib = 1024 * 1024
    at_limit = "€" * (mib // 3) + "a"  # 349,526 characters, 1,048,576 bytes
    assert len(at_limit.encode()) == mib

    body = json.dumps({"role": "user", "content": at_limit}, ensure_ascii=False)
    accepted = await _post_raw(client, url, body, account)
    assert accepted.status_code == 201, accepted.text[:200]
    body = json.dumps({"role": "user", "content": at_limit + "a"}, ensure_ascii=False)
    assert_problem(await _post_raw(client, url, body, account), 413, "payload_too_large")

    stored = await _stored(client, account, session["id"])
    assert len(stored) == 1
    assert stored[0]["content"] == at_limit
