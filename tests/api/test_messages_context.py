"""GET /sessions/{id}/context: the newest messages that fit a token budget, oldest first, with
tool calls and their results kept together."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from tests.assertions import assert_validation_error
from tests.factories import API, Account, Factory


async def _context(
    client: httpx.AsyncClient, account: Account, session_id: str, max_tokens: int
) -> Any:
    response = await client.get(
        f"{API}/sessions/{session_id}/context",
        params={"max_tokens": max_tokens},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "context"
    return body


async def _batch(
    client: httpx.AsyncClient, account: Account, session_id: str, items: list[dict[str, Any]]
) -> list[Any]:
    response = await client.post(
        f"{API}/sessions/{session_id}/messages/batch",
        json={"messages": items},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return list(response.json()["data"])


def _calls(*ids: str) -> list[dict[str, str]]:
    return [{"id": call_id, "name": "grep", "arguments": "{}"} for call_id in ids]


def _reference(messages: list[Any], max_tokens: int) -> tuple[list[Any], int]:
    """The contract, spelled out: a message and the tool messages right after it are one
    group; the newest groups are taken while they fit."""
    groups: list[list[Any]] = []
    for message in messages:
        if message["role"] == "tool" and groups:
            groups[-1].append(message)
        else:
            groups.append([message])
    chosen: list[Any] = []
    total = 0
    for group in reversed(groups):
        cost = sum(
            m["token_count"]
            if m["token_count"] is not None
            else max(1, math.ceil(len(m["content"] or m["partial_content"] or "") / 4))
            for m in group
        )
        if total + cost > max_tokens:
            break
        chosen = group + chosen
        total += cost
    return chosen, total


async def test_newest_messages_that_fit_oldest_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = await _batch(
        client,
        account,
        session["id"],
        [{"role": "user", "content": f"m{i}", "token_count": 10} for i in range(1, 6)],
    )
    everything = await _context(client, account, session["id"], 50)
    assert everything["data"] == messages
    assert (everything["token_count"], everything["truncated"], everything["omitted_count"]) == (
        50,
        False,
        0,
    )

    window = await _context(client, account, session["id"], 29)
    assert [m["content"] for m in window["data"]] == ["m4", "m5"]
    assert window["data"] == messages[3:]
    assert (window["token_count"], window["truncated"], window["omitted_count"]) == (20, True, 3)

    exact = await _context(client, account, session["id"], 30)
    assert [m["content"] for m in exact["data"]] == ["m3", "m4", "m5"]
    assert exact["token_count"] == 30

    nothing = await _context(client, account, session["id"], 9)
    assert (nothing["data"], nothing["token_count"], nothing["truncated"]) == ([], 0, True)
    assert nothing["omitted_count"] == 5


async def test_empty_session(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    body = await _context(client, account, session["id"], 100)
    assert body == {
        "object": "context",
        "data": [],
        "token_count": 0,
        "truncated": False,
        "omitted_count": 0,
    }


async def test_estimate_where_no_token_count_is_stored(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await _batch(
        client,
        account,
        session["id"],
        [
            {"role": "user", "content": "x" * 40},  # 10
            {"role": "assistant", "content": "y" * 9},  # ceil(9/4) = 3
            {"role": "user", "content": ""},  # at least 1
            {"role": "assistant", "content": "z" * 400, "token_count": 2},  # stored wins
            {"role": "user", "content": "w" * 400, "token_count": 0},  # 0 is a count too
            {"role": "assistant", "status": "pending", "partial_content": "😀é" * 3},  # 6 → 2
        ],
    )
    body = await _context(client, account, session["id"], 10_000)
    assert body["token_count"] == 10 + 3 + 1 + 2 + 0 + 2
    assert body["truncated"] is False

    body = await _context(client, account, session["id"], 8)
    assert [m["seq"] for m in body["data"]] == [2, 3, 4, 5, 6]
    assert (body["token_count"], body["omitted_count"]) == (8, 1)
    body = await _context(client, account, session["id"], 7)
    assert [m["seq"] for m in body["data"]] == [3, 4, 5, 6]
    assert (body["token_count"], body["omitted_count"]) == (5, 2)


async def test_updated_token_count_is_used(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    first, _ = await _batch(
        client,
        account,
        session["id"],
        [{"role": "user", "content": "a" * 80}, {"role": "assistant", "content": "b" * 80}],
    )
    assert [m["seq"] for m in (await _context(client, account, session["id"], 40))["data"]] == [
        1,
        2,
    ]
    patched = await client.patch(
        f"{API}/sessions/{session['id']}/messages/{first['id']}",
        json={"token_count": 25},
        headers=account.headers,
    )
    assert patched.status_code == 200
    body = await _context(client, account, session["id"], 40)
    assert [m["seq"] for m in body["data"]] == [2]
    assert body["token_count"] == 20


async def test_tool_results_stay_with_their_call(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = await _batch(
        client,
        account,
        session["id"],
        [
            {"role": "user", "content": "q", "token_count": 5},  # 1
            {
                "role": "assistant",
                "content": "call",
                "token_count": 5,
                "tool_calls": _calls("1", "2"),
            },
            {"role": "tool", "content": "r1", "token_count": 5, "tool_call_id": "1"},  # 3
            {"role": "tool", "content": "r2", "token_count": 5, "tool_call_id": "2"},  # 4
            {"role": "assistant", "content": "answer", "token_count": 5},  # 5
        ],
    )

    def seqs(body: Any) -> list[int]:
        return [m["seq"] for m in body["data"]]

    # Room for the answer and one or two tool results, never for the results without the call.
    for budget in (5, 10, 15, 19):
        body = await _context(client, account, session["id"], budget)
        assert seqs(body) == [5], budget
        assert (body["token_count"], body["omitted_count"]) == (5, 4)
    for budget in (20, 24):
        assert seqs(await _context(client, account, session["id"], budget)) == [2, 3, 4, 5]
    assert seqs(await _context(client, account, session["id"], 25)) == [1, 2, 3, 4, 5]

    # The newest message a tool result: it comes with its call, or not at all.
    tail = await _batch(
        client,
        account,
        session["id"],
        [
            {
                "role": "assistant",
                "content": "call again",
                "token_count": 5,
                "tool_calls": _calls("3"),
            },
            {"role": "tool", "content": "r3", "token_count": 5, "tool_call_id": "3"},  # 7
        ],
    )
    assert seqs(await _context(client, account, session["id"], 9)) == []
    body = await _context(client, account, session["id"], 10)
    assert body["data"] == tail
    assert (body["truncated"], body["omitted_count"]) == (True, 5)
    body = await _context(client, account, session["id"], 34)
    assert body["data"] == [*messages[1:], *tail]


async def test_long_session_with_a_group_across_read_pages(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """The window is read newest first in pages; a tool group cut by a page edge is still
    taken whole or not at all."""
    account = await factory.account()
    session = await factory.chat_session(account)
    items: list[dict[str, Any]] = []
    results = {39: range(40, 61), 244: range(245, 261)}
    for i in range(1, 451):
        item: dict[str, Any] = {"role": "user" if i % 2 else "assistant"}
        if 245 <= i <= 260 or 40 <= i <= 60:
            item = {"role": "tool", "tool_call_id": f"c{i}"}
        if i in results:
            item = {"role": "assistant", "tool_calls": _calls(*(f"c{n}" for n in results[i]))}
        items.append({**item, "content": "t" * (i % 7 * 4 + 1)})
    messages: list[Any] = []
    for start in range(0, len(items), 100):
        messages += await _batch(client, account, session["id"], items[start : start + 100])

    for budget in (1, 50, 300, 380, 385, 400, 430, 440, 600, 700, 720, 730, 800, 1000, 2000):
        chosen, total = _reference(messages, budget)
        body = await _context(client, account, session["id"], budget)
        assert [m["seq"] for m in body["data"]] == [m["seq"] for m in chosen], budget
        assert body["token_count"] == total
        assert body["truncated"] is (len(chosen) < 450)
        assert body["omitted_count"] == 450 - len(chosen)
        kept = {m["seq"] for m in body["data"]}
        for seq in kept:  # every kept tool result has its caller, and every caller its results
            if messages[seq - 1]["role"] == "tool":
                assert seq - 1 in kept
            if seq < 450 and messages[seq]["role"] == "tool":
                assert seq + 1 in kept


async def test_context_after_deletions(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = await factory.messages(account, session["id"], 4, token_count=10)
    await client.delete(
        f"{API}/sessions/{session['id']}/messages/{messages[3]['id']}", headers=account.headers
    )
    body = await _context(client, account, session["id"], 20)
    assert body["data"] == messages[1:3]
    assert (body["truncated"], body["omitted_count"]) == (True, 1)


@pytest.mark.parametrize("query", ["", "?max_tokens=0", "?max_tokens=-5", "?max_tokens=lots"])
async def test_max_tokens_is_required_and_positive(
    client: httpx.AsyncClient, factory: Factory, query: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    response = await client.get(
        f"{API}/sessions/{session['id']}/context{query}", headers=account.headers
    )
    assert_validation_error(response, "query", "max_tokens")
