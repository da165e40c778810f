"""Seqs, versions and offsets beyond the 4-byte integers they are stored as: 422, not a
database error."""

from __future__ import annotations

import httpx
import pytest

from tests.assertions import assert_problem, assert_validation_error
from tests.factories import API, SESSIONS, Factory

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
        ("/events", {}, {"Last-Event-ID": "1_0"}, ("header", "Last-Event-ID")),
        ("/events", {}, {"Last-Event-ID": "+5"}, ("header", "Last-Event-ID")),
        ("/messages/{message}/stream", {}, {"Last-Event-ID": "-0"}, ("header", "Last-Event-ID")),
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


async def test_a_sessions_total_tokens_goes_past_32_bits(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Each message's token_count is at most 100,000,000; their sum, the session's
    total_tokens, is not bounded by 32 bits (it passes 2**31 - 1 at the 22nd such message)."""
    account = await factory.account()
    session = await factory.chat_session(account)
    big = [{"role": "user", "content": f"m{i}", "token_count": 100_000_000} for i in range(25)]
    batch = await client.post(
        f"{API}/sessions/{session['id']}/messages/batch",
        json={"messages": big},
        headers=account.headers,
    )
    assert batch.status_code == 201, batch.text
    one_more = await factory.message(account, session["id"], content="and one", token_count=7)
    stored = await client.get(f"{API}/sessions/{session['id']}", headers=account.headers)
    assert stored.json()["total_tokens"] == 2_500_000_007
    assert one_more["seq"] == 26
