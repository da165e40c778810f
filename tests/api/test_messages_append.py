"""Appending messages: seq assignment (one, batch, concurrent), session counters, the automatic
title, activity order, client-chosen ids, idempotent retries and compare-and-append."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert, select, update

from chat_store.models import IdempotencyKey, MessageTombstone
from chat_store.state import AppState
from tests.assertions import assert_problem, assert_recent, assert_validation_error, parse_time
from tests.factories import API, Account, Factory


def _messages_url(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/messages"


async def _stored(client: httpx.AsyncClient, account: Account, session_id: str) -> list[Any]:
    """Every message of the session, read back in seq order."""
    found: list[Any] = []
    after = ""
    while True:
        response = await client.get(
            f"{_messages_url(session_id)}?limit=100{after}", headers=account.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["data"])
        if not page["has_more"]:
            return found
        after = f"&after={page['last_id']}"


async def _session(client: httpx.AsyncClient, account: Account, session_id: str) -> Any:
    response = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


# --- one message


async def test_append_assigns_seq_and_echoes_fields(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    chosen_id = str(uuid.uuid4())
    body = {
        "id": chosen_id,
        "role": "assistant",
        "content": "The timeout is set in settings.py.",
        "context": {"documents": [{"id": "doc-7", "score": 0.82}], "reranker": "bge-v2"},
        "metadata": {"client": "cli", "nested": {"list": [1, 2]}},
        "token_count": 9,
        "model": "gpt-4o",
        "latency_ms": 1234,
    }
    response = await client.post(_messages_url(session["id"]), json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] == chosen_id
    assert created["object"] == "message"
    assert created["session_id"] == session["id"]
    assert created["seq"] == 1
    assert created["role"] == "assistant"
    assert created["content"] == body["content"]
    assert created["partial_content"] is None
    assert created["status"] == "complete"
    assert created["error_message"] is None
    assert created["context"] == body["context"]
    assert created["metadata"] == body["metadata"]
    assert created["token_count"] == 9
    assert created["model"] == "gpt-4o"
    assert created["latency_ms"] == 1234
    assert_recent(created["created_at"])
    assert created["updated_at"] == created["created_at"]
    assert created["completed_at"] == created["created_at"]

    read = await client.get(f"{_messages_url(session['id'])}/{chosen_id}", headers=account.headers)
    assert read.status_code == 200
    assert read.json() == created


async def test_appends_get_seq_1_2_3(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    seqs = []
    call = {"id": "call_1", "name": "calc", "arguments": "{}"}
    answers: dict[str, dict[str, Any]] = {
        "assistant": {"tool_calls": [call]},
        "tool": {"tool_call_id": "call_1"},
    }
    for role in ("system", "user", "assistant", "tool"):
        created = await factory.message(
            account, session["id"], role=role, content=role, **answers.get(role, {})
        )
        seqs.append(created["seq"])
    assert seqs == [1, 2, 3, 4]
    stored = await _stored(client, account, session["id"])
    assert [(m["seq"], m["role"], m["content"]) for m in stored] == [
        (1, "system", "system"),
        (2, "user", "user"),
        (3, "assistant", "assistant"),
        (4, "tool", "tool"),
    ]


async def test_defaults_of_a_minimal_message(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    response = await client.post(
        _messages_url(session["id"]), json={"role": "user", "content": ""}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["content"] == ""  # empty text is still content
    assert created["status"] == "complete"
    assert created["metadata"] == {}
    assert created["context"] is None
    assert created["token_count"] is None
    assert created["model"] is None
    uuid.UUID(created["id"])


async def test_open_message_has_partial_content_and_no_completed_at(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    pending = await factory.message(account, session["id"], role="assistant", status="pending")
    assert pending["status"] == "pending"
    assert pending["content"] is None
    assert pending["partial_content"] == ""
    assert pending["completed_at"] is None
    started = await factory.message(
        account, session["id"], role="assistant", status="in_progress", partial_content="Hal"
    )
    assert started["partial_content"] == "Hal"
    assert started["completed_at"] is None
    failed = await factory.message(
        account,
        session["id"],
        role="assistant",
        status="failed",
        partial_content="Half an ans",
        error_message="provider timeout",
    )
    assert (failed["partial_content"], failed["error_message"]) == (
        "Half an ans",
        "provider timeout",
    )
    stored = await _stored(client, account, session["id"])
    assert stored == [pending, started, failed]


async def test_taken_message_id_is_409_and_consumes_no_seq(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    other = await factory.chat_session(account)
    first = await factory.message(account, session["id"], content="original")

    for target in (session["id"], other["id"]):  # ids are global, not per session
        response = await client.post(
            _messages_url(target),
            json={"id": first["id"], "role": "user", "content": "impostor"},
            headers=account.headers,
        )
        assert_problem(response, 409, "message_exists")
    assert await _stored(client, account, session["id"]) == [first]
    assert await _stored(client, account, other["id"]) == []
    assert (await factory.message(account, session["id"]))["seq"] == 2
    assert (await factory.message(account, other["id"]))["seq"] == 1


async def test_another_users_message_id_is_taken_too(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    stranger = await factory.account()
    owned = await factory.message(owner, (await factory.chat_session(owner))["id"])
    session = await factory.chat_session(stranger)
    response = await client.post(
        _messages_url(session["id"]),
        json={"id": owned["id"], "role": "user", "content": "x"},
        headers=stranger.headers,
    )
    assert_problem(response, 409, "message_exists")
    assert await _stored(client, stranger, session["id"]) == []


async def test_a_deleted_messages_id_is_not_reused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """The change feed replays a deletion under the message's id: a message written again with
    it would be deleted by that replay (and its own deletion could not be kept)."""
    account = await factory.account()
    session = await factory.chat_session(account)
    gone = await factory.message(account, session["id"], content="deleted")
    deleted = await client.delete(
        f"{_messages_url(session['id'])}/{gone['id']}", headers=account.headers
    )
    assert deleted.status_code == 200, deleted.text

    single = await client.post(
        _messages_url(session["id"]),
        json={"id": gone["id"], "role": "user", "content": "again"},
        headers=account.headers,
    )
    batch = await client.post(
        f"{_messages_url(session['id'])}/batch",
        json={
            "messages": [
                {"role": "user", "content": "x"},
                {"id": gone["id"], "role": "user", "content": "y"},
            ]
        },
        headers=account.headers,
    )

    assert_problem(single, 409, "message_exists")
    assert_problem(batch, 409, "message_exists")
    assert await _stored(client, account, session["id"]) == []


async def test_a_message_whose_id_has_a_tombstone_can_be_deleted(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A tombstone left under a message's id (written again before ids were checked against
    tombstones) does not make the message undeletable: the newest deletion is kept."""
    account = await factory.account()
    session = await factory.chat_session(account)
    other = await factory.chat_session(account)
    kept = await factory.message(account, session["id"], content="kept")
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            insert(MessageTombstone).values(
                message_id=uuid.UUID(kept["id"]),
                session_id=uuid.UUID(other["id"]),
                seq=7,
                version=1,
            )
        )

    deleted = await client.delete(
        f"{_messages_url(session['id'])}/{kept['id']}", headers=account.headers
    )

    assert deleted.status_code == 200, deleted.text
    assert await _stored(client, account, session["id"]) == []
    async with state.sessionmaker() as db:
        tombstone = (await db.execute(select(MessageTombstone))).scalars().one()
    assert (str(tombstone.session_id), tombstone.seq) == (session["id"], kept["seq"])


# --- batches


async def test_batch_appends_consecutive_seqs(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="before")
    batch = [
        {"role": "user", "content": "question"},
        {
            "role": "assistant",
            "content": "calling a tool",
            "token_count": 3,
            "tool_calls": [{"id": "c1", "name": "calc", "arguments": '{"x": 6}'}],
        },
        {
            "role": "tool",
            "content": '{"result": 42}',
            "metadata": {"tool": "calc"},
            "tool_call_id": "c1",
        },
        {"role": "assistant", "status": "pending"},
    ]
    response = await client.post(
        f"{_messages_url(session['id'])}/batch", json={"messages": batch}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    page = response.json()
    assert page["object"] == "list"
    assert page["has_more"] is False
    data = page["data"]
    assert [m["seq"] for m in data] == [2, 3, 4, 5]
    assert [m["role"] for m in data] == ["user", "assistant", "tool", "assistant"]
    assert [m["content"] for m in data] == ["question", "calling a tool", '{"result": 42}', None]
    assert data[2]["metadata"] == {"tool": "calc"}
    assert data[3]["status"] == "pending"
    assert page["first_id"] == data[0]["id"]
    assert page["last_id"] == data[-1]["id"]
    assert len({m["id"] for m in data}) == 4
    stored = await _stored(client, account, session["id"])
    assert stored[1:] == data
    assert (await _session(client, account, session["id"]))["message_count"] == 5


async def test_batch_with_one_bad_item_stores_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])
    bad_items: list[dict[str, Any]] = [
        {"role": "narrator", "content": "x"},
        {"role": "user"},  # complete without content
        {"role": "user", "content": "x", "status": "pending"},
        {"role": "user", "content": "nul\x00"},
        {"role": "user", "content": "x", "unknown": 1},
    ]
    for bad in bad_items:
        messages = [{"role": "user", "content": "good"}, bad, {"role": "user", "content": "ok"}]
        response = await client.post(
            f"{_messages_url(session['id'])}/batch",
            json={"messages": messages},
            headers=account.headers,
        )
        assert_validation_error(response, "body", "messages", 1)
    assert [m["seq"] for m in await _stored(client, account, session["id"])] == [1]
    assert (await _session(client, account, session["id"]))["message_count"] == 1
    assert (await factory.message(account, session["id"]))["seq"] == 2


async def test_batch_with_duplicate_or_taken_id_stores_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    existing = await factory.message(account, session["id"])
    fresh = str(uuid.uuid4())

    duplicated = [
        {"id": fresh, "role": "user", "content": "a"},
        {"id": fresh, "role": "user", "content": "b"},
    ]
    response = await client.post(
        f"{_messages_url(session['id'])}/batch",
        json={"messages": duplicated},
        headers=account.headers,
    )
    assert_validation_error(response, "body", "messages")

    taken = [
        {"id": fresh, "role": "user", "content": "a"},
        {"id": existing["id"], "role": "user", "content": "b"},
    ]
    response = await client.post(
        f"{_messages_url(session['id'])}/batch", json={"messages": taken}, headers=account.headers
    )
    assert_problem(response, 409, "message_exists")

    assert await _stored(client, account, session["id"]) == [existing]
    missing = await client.get(f"{_messages_url(session['id'])}/{fresh}", headers=account.headers)
    assert_problem(missing, 404, "message_not_found")
    assert (await factory.message(account, session["id"]))["seq"] == 2


async def test_batch_size_limits(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{_messages_url(session['id'])}/batch"

    def batch(count: int) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": f"m{i}"} for i in range(count)]}

    assert_validation_error(
        await client.post(url, json=batch(101), headers=account.headers), "body", "messages"
    )
    assert_validation_error(
        await client.post(url, json=batch(0), headers=account.headers), "body", "messages"
    )
    assert await _stored(client, account, session["id"]) == []

    response = await client.post(url, json=batch(100), headers=account.headers)
    assert response.status_code == 201, response.text
    assert [m["seq"] for m in response.json()["data"]] == list(range(1, 101))
    stored = await _stored(client, account, session["id"])
    assert [m["content"] for m in stored] == [f"m{i}" for i in range(100)]


# --- concurrency


async def test_concurrent_appends_get_each_seq_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)

    async def append(i: int) -> httpx.Response:
        return await client.post(
            _messages_url(session["id"]),
            json={"role": "user", "content": f"c{i}", "token_count": 2},
            headers=account.headers,
        )

    responses = await asyncio.gather(*(append(i) for i in range(50)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    by_content = {r.json()["content"]: r.json()["seq"] for r in responses}
    assert sorted(by_content.values()) == list(range(1, 51))

    stored = await _stored(client, account, session["id"])
    assert [m["seq"] for m in stored] == list(range(1, 51))
    assert {m["content"]: m["seq"] for m in stored} == by_content
    counters = await _session(client, account, session["id"])
    assert counters["message_count"] == 50
    assert counters["total_tokens"] == 100
    assert (await factory.message(account, session["id"]))["seq"] == 51


async def test_concurrent_batches_interleave_without_gaps(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)

    async def append_batch(b: int) -> httpx.Response:
        messages = [{"role": "user", "content": f"b{b}-{i}"} for i in range(5)]
        return await client.post(
            f"{_messages_url(session['id'])}/batch",
            json={"messages": messages},
            headers=account.headers,
        )

    async def append_one(i: int) -> httpx.Response:
        return await client.post(
            _messages_url(session["id"]),
            json={"role": "user", "content": f"single-{i}"},
            headers=account.headers,
        )

    responses = await asyncio.gather(
        *(append_batch(b) for b in range(8)), *(append_one(i) for i in range(10))
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    for response in responses[:8]:
        seqs = [m["seq"] for m in response.json()["data"]]
        assert seqs == list(range(seqs[0], seqs[0] + 5))  # a batch is never split
    stored = await _stored(client, account, session["id"])
    assert [m["seq"] for m in stored] == list(range(1, 51))
    assert (await _session(client, account, session["id"]))["message_count"] == 50


# --- seq and counters


async def test_seq_of_a_deleted_last_message_is_never_reused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])
    second = await factory.message(account, session["id"])
    deleted = await client.delete(
        f"{_messages_url(session['id'])}/{second['id']}", headers=account.headers
    )
    assert deleted.status_code == 200
    assert deleted.json() == {"id": second["id"], "object": "message.deleted", "deleted": True}
    assert (await factory.message(account, session["id"]))["seq"] == 3

    # Even when the session is emptied.
    for message in await _stored(client, account, session["id"]):
        response = await client.delete(
            f"{_messages_url(session['id'])}/{message['id']}", headers=account.headers
        )
        assert response.status_code == 200
    assert await _stored(client, account, session["id"]) == []
    assert (await factory.message(account, session["id"]))["seq"] == 4
    batch = await factory.messages(account, session["id"], 2)
    assert [m["seq"] for m in batch] == [5, 6]


async def test_counters_follow_appends_token_updates_and_deletes(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    fresh = await _session(client, account, session["id"])
    assert (fresh["message_count"], fresh["total_tokens"], fresh["last_message_at"]) == (
        0,
        0,
        None,
    )

    first = await factory.message(account, session["id"], token_count=10)
    second = await factory.message(account, session["id"])  # no token_count: counts as 0
    third = await factory.message(account, session["id"], role="assistant", token_count=5)
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (3, 15)
    assert counters["last_message_at"] == third["created_at"]

    url = _messages_url(session["id"])
    for message_id, tokens in ((first["id"], 4), (second["id"], 7), (third["id"], None)):
        response = await client.patch(
            f"{url}/{message_id}", json={"token_count": tokens}, headers=account.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["token_count"] == tokens
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (3, 11)
    assert counters["last_message_at"] == third["created_at"]

    await client.delete(f"{url}/{third['id']}", headers=account.headers)
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (2, 11)
    assert counters["last_message_at"] == second["created_at"]

    await client.delete(f"{url}/{first['id']}", headers=account.headers)
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (1, 7)
    assert counters["last_message_at"] == second["created_at"]

    await client.delete(f"{url}/{second['id']}", headers=account.headers)
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (0, 0)
    assert counters["last_message_at"] is None

    batch = await factory.messages(account, session["id"], 3, token_count=2)
    counters = await _session(client, account, session["id"])
    assert (counters["message_count"], counters["total_tokens"]) == (3, 6)
    assert counters["last_message_at"] == batch[-1]["created_at"]


async def test_first_user_message_titles_an_untitled_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    assert session["title"] is None
    await factory.message(account, session["id"], role="system", content="You are terse.")
    await factory.message(account, session["id"], role="assistant", content="Hello there")
    assert (await _session(client, account, session["id"]))["title"] is None

    long_line = "Why does test_billing fail on CI " + "é" * 100
    await factory.message(account, session["id"], content=f"\n  \n\t  {long_line}  \nsecond line\n")
    title = (await _session(client, account, session["id"]))["title"]
    assert title == long_line[:80]
    assert len(title) == 80

    await factory.message(account, session["id"], content="A later question")
    assert (await _session(client, account, session["id"]))["title"] == long_line[:80]


async def test_short_first_line_is_the_whole_title(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    batch = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "   Refactor billing   \nthen tests"},
    ]
    response = await client.post(
        f"{_messages_url(session['id'])}/batch", json={"messages": batch}, headers=account.headers
    )
    assert response.status_code == 201
    assert (await _session(client, account, session["id"]))["title"] == "Refactor billing"


async def test_a_blank_first_question_leaves_the_title_to_the_next(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """A batch names the session as its messages appended one by one would: a user message
    with no line of text names nothing. An import does the same."""
    account = await factory.account()
    session = await factory.chat_session(account)
    batch = [
        {"role": "user", "content": " \n\t "},
        {"role": "assistant", "content": "Yes?"},
        {"role": "user", "content": "Real question here"},
    ]
    response = await client.post(
        f"{_messages_url(session['id'])}/batch", json={"messages": batch}, headers=account.headers
    )
    imported = await client.post(
        f"{API}/sessions/import", json={"messages": batch}, headers=account.headers
    )

    assert response.status_code == 201, response.text
    assert (await _session(client, account, session["id"]))["title"] == "Real question here"
    assert imported.status_code == 201, imported.text
    assert imported.json()["session"]["title"] == "Real question here"


async def test_titled_session_keeps_its_title(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="Chosen by hand")
    await factory.message(account, session["id"], content="Something else entirely")
    assert (await _session(client, account, session["id"]))["title"] == "Chosen by hand"


async def test_session_with_the_newest_message_is_listed_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    first = await factory.chat_session(account, title="first")
    second = await factory.chat_session(account, title="second")
    third = await factory.chat_session(account, title="third")

    async def order() -> list[str]:
        response = await client.get(f"{API}/sessions", headers=account.headers)
        return [s["title"] for s in response.json()["data"]]

    assert await order() == ["third", "second", "first"]
    await factory.message(account, first["id"])
    assert await order() == ["first", "third", "second"]
    await factory.messages(account, second["id"], 2)
    assert await order() == ["second", "first", "third"]
    await factory.message(account, third["id"])
    assert await order() == ["third", "second", "first"]


# --- idempotency


async def test_idempotent_message_create(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    headers = {**account.headers, "Idempotency-Key": "create-1"}
    body = {"role": "user", "content": "exactly once", "metadata": {"try": 1}}
    first = await client.post(_messages_url(session["id"]), json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(_messages_url(session["id"]), json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    stored = await _stored(client, account, session["id"])
    assert stored == [first.json()]
    assert (await _session(client, account, session["id"]))["message_count"] == 1

    changed = await client.post(
        _messages_url(session["id"]), json={**body, "content": "changed"}, headers=headers
    )
    assert_problem(changed, 409, "idempotency_key_reused")
    other_session = await factory.chat_session(account)
    elsewhere = await client.post(_messages_url(other_session["id"]), json=body, headers=headers)
    assert_problem(elsewhere, 409, "idempotency_key_reused")
    assert await _stored(client, account, session["id"]) == [first.json()]
    assert await _stored(client, account, other_session["id"]) == []

    # Another key is another request; the next seq shows nothing was consumed by the refusals.
    fresh = await client.post(
        _messages_url(session["id"]),
        json=body,
        headers={**account.headers, "Idempotency-Key": "create-2"},
    )
    assert fresh.status_code == 201
    assert fresh.json()["seq"] == 2


async def test_idempotent_batch(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    headers = {**account.headers, "Idempotency-Key": "batch-1"}
    body = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    url = f"{_messages_url(session['id'])}/batch"
    first = await client.post(url, json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(url, json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert await _stored(client, account, session["id"]) == first.json()["data"]

    changed = {"messages": [*body["messages"], {"role": "user", "content": "more"}]}
    assert_problem(
        await client.post(url, json=changed, headers=headers), 409, "idempotency_key_reused"
    )
    assert await _stored(client, account, session["id"]) == first.json()["data"]
    assert (await _session(client, account, session["id"]))["message_count"] == 2


async def test_idempotent_fork(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="source")
    messages = await factory.messages(account, session["id"], 3)
    headers = {**account.headers, "Idempotency-Key": "fork-1"}
    url = f"{API}/sessions/{session['id']}/fork"
    body = {"message_id": messages[1]["id"]}
    first = await client.post(url, json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(url, json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()

    other = await client.post(url, json={"message_id": messages[2]["id"]}, headers=headers)
    assert_problem(other, 409, "idempotency_key_reused")
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert sorted(s["id"] for s in listed.json()["data"]) == sorted(
        [session["id"], first.json()["id"]]
    )
    assert len(await _stored(client, account, first.json()["id"])) == 2


async def test_a_refused_create_keeps_no_key(client: httpx.AsyncClient, factory: Factory) -> None:
    """The key is claimed before the create runs; a create refused (409 seq_conflict here)
    leaves no record: the same key then runs the corrected request."""
    account = await factory.account()
    session = await factory.chat_session(account)
    headers = {**account.headers, "Idempotency-Key": "refused-1"}
    body = {"role": "user", "content": "hi", "expected_last_seq": 5}

    refused = await client.post(_messages_url(session["id"]), json=body, headers=headers)
    retried = await client.post(
        _messages_url(session["id"]), json={**body, "expected_last_seq": 0}, headers=headers
    )

    assert_problem(refused, 409, "seq_conflict")
    assert retried.status_code == 201, retried.text
    assert await _stored(client, account, session["id"]) == [retried.json()]


async def test_an_expired_key_is_a_new_request(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A record past IDEMPOTENCY_TTL_HOURS that the housekeeping has not purged yet gives way
    to the next request with its key, which is kept in its place."""
    account = await factory.account()
    session = await factory.chat_session(account)
    headers = {**account.headers, "Idempotency-Key": "expiring"}
    body = {"role": "user", "content": "hi"}
    first = await client.post(_messages_url(session["id"]), json=body, headers=headers)
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(IdempotencyKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    again = await client.post(_messages_url(session["id"]), json=body, headers=headers)
    replayed = await client.post(_messages_url(session["id"]), json=body, headers=headers)

    assert (first.status_code, again.status_code, replayed.status_code) == (201, 201, 201)
    assert again.json()["seq"] == 2
    assert replayed.json() == again.json()  # the new record is live
    async with state.sessionmaker() as db:
        records = (await db.execute(select(IdempotencyKey.key))).scalars().all()
    assert records == ["expiring"]


async def test_idempotency_keys_belong_to_their_user(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    alice = await factory.account()
    bob = await factory.account()
    alice_session = await factory.chat_session(alice)
    bob_session = await factory.chat_session(bob)
    body = {"role": "user", "content": "same words"}
    a = await client.post(
        _messages_url(alice_session["id"]),
        json=body,
        headers={**alice.headers, "Idempotency-Key": "shared"},
    )
    b = await client.post(
        _messages_url(bob_session["id"]),
        json=body,
        headers={**bob.headers, "Idempotency-Key": "shared"},
    )
    assert (a.status_code, b.status_code) == (201, 201), b.text
    assert a.json()["id"] != b.json()["id"]
    assert len(await _stored(client, bob, bob_session["id"])) == 1


# --- compare-and-append


async def test_expected_last_seq(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = _messages_url(session["id"])

    first = await client.post(
        url, json={"role": "user", "content": "a", "expected_last_seq": 0}, headers=account.headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["seq"] == 1
    assert "expected_last_seq" not in first.json()

    stale = await client.post(
        url, json={"role": "user", "content": "b", "expected_last_seq": 0}, headers=account.headers
    )
    assert assert_problem(stale, 409, "seq_conflict")["last_seq"] == 1
    ahead = await client.post(
        url, json={"role": "user", "content": "b", "expected_last_seq": 5}, headers=account.headers
    )
    assert assert_problem(ahead, 409, "seq_conflict")["last_seq"] == 1

    batch = {"messages": [{"role": "user", "content": "c"}], "expected_last_seq": 0}
    refused = await client.post(f"{url}/batch", json=batch, headers=account.headers)
    assert assert_problem(refused, 409, "seq_conflict")["last_seq"] == 1
    assert [m["content"] for m in await _stored(client, account, session["id"])] == ["a"]
    assert (await _session(client, account, session["id"]))["message_count"] == 1

    batch["expected_last_seq"] = 1
    accepted = await client.post(f"{url}/batch", json=batch, headers=account.headers)
    assert accepted.status_code == 201
    assert [m["seq"] for m in accepted.json()["data"]] == [2]

    # The last seq is the highest ever given, not the count: a deletion does not lower it.
    await client.delete(f"{url}/{accepted.json()['data'][0]['id']}", headers=account.headers)
    after_delete = await client.post(
        url, json={"role": "user", "content": "d", "expected_last_seq": 1}, headers=account.headers
    )
    assert assert_problem(after_delete, 409, "seq_conflict")["last_seq"] == 2
    ok = await client.post(
        url, json={"role": "user", "content": "d", "expected_last_seq": 2}, headers=account.headers
    )
    assert ok.status_code == 201
    assert ok.json()["seq"] == 3


async def test_two_writers_with_the_same_expected_last_seq(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])

    async def write(i: int) -> httpx.Response:
        body = {"role": "user", "content": f"writer {i}", "expected_last_seq": 1}
        return await client.post(_messages_url(session["id"]), json=body, headers=account.headers)

    responses = await asyncio.gather(*(write(i) for i in range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["last_seq"] == 2
    stored = await _stored(client, account, session["id"])
    assert [m["seq"] for m in stored] == [1, 2]
    winner = next(r for r in responses if r.status_code == 201)
    assert stored[1] == winner.json()
    parse_time(stored[1]["created_at"])
