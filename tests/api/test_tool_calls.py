"""Tool calls: an assistant message's `tool_calls` and the tool messages that answer them, as
fields of messages; kept on every read, by /context, export and import; and a generated turn
whose model calls the client's tools, answered by the client, then continued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.assertions import assert_problem, assert_validation_error
from tests.backends import Backend
from tests.conftest import AppWith, running_app
from tests.factories import API, Account, Factory
from tests.support.chat import chat_path, chat_settings, message_path, new_session
from tests.support.llm_server import LlmServer

CALLS = [
    {"id": "call_a", "name": "read_file", "arguments": '{"path": "billing.py"}'},
    {"id": "call_b", "name": "run_tests", "arguments": '{"only": "test_billing"}'},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the project",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "run_tests"}},
]


@pytest.fixture(scope="module")
async def app(backend: Backend, llm: LlmServer) -> AsyncIterator[FastAPI]:
    async with running_app(chat_settings(backend, llm)) as started:
        yield started


def _messages(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/messages"


async def _append(
    client: httpx.AsyncClient, account: Account, session_id: str, **body: Any
) -> httpx.Response:
    return await client.post(_messages(session_id), json=body, headers=account.headers)


async def _calling_session(
    client: httpx.AsyncClient, factory: Factory
) -> tuple[Account, str, dict[str, Any]]:
    """A session: a question, then an assistant message calling two tools."""
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, content="Why does test_billing fail?")
    response = await _append(
        client, account, session_id, role="assistant", content="", tool_calls=CALLS
    )
    assert response.status_code == 201, response.text
    return account, session_id, response.json()


async def test_tool_calls_and_results_are_stored_and_read_back(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, call = await _calling_session(client, factory)
    assert call["tool_calls"] == CALLS
    assert call["tool_call_id"] is None

    first = await _append(
        client, account, session_id, role="tool", content="def charge(): ...", tool_call_id="call_a"
    )
    batch = await client.post(
        f"{_messages(session_id)}/batch",
        json={"messages": [{"role": "tool", "content": "1 failed", "tool_call_id": "call_b"}]},
        headers=account.headers,
    )

    assert first.status_code == 201, first.text
    assert (first.json()["tool_call_id"], first.json()["tool_calls"]) == ("call_a", None)
    assert batch.status_code == 201, batch.text
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert [(m["role"], m["tool_calls"], m["tool_call_id"]) for m in listed] == [
        ("user", None, None),
        ("assistant", CALLS, None),
        ("tool", None, "call_a"),
        ("tool", None, "call_b"),
    ]
    one = await client.get(message_path(session_id, call["id"]), headers=account.headers)
    assert one.json()["tool_calls"] == CALLS


async def test_a_batch_may_hold_the_call_and_its_results(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    items = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": CALLS[:1]},
        {"role": "tool", "content": "r", "tool_call_id": "call_a"},
    ]
    response = await client.post(
        f"{_messages(session_id)}/batch", json={"messages": items}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    assert [m["tool_call_id"] for m in response.json()["data"]] == [None, None, "call_a"]

    # A result before its call (in the same batch) answers nothing yet: none is stored.
    backwards = [items[2] | {"tool_call_id": "call_z"}, items[1] | {"tool_calls": [CALLS[1]]}]
    refused = await client.post(
        f"{_messages(session_id)}/batch", json={"messages": backwards}, headers=account.headers
    )
    body = assert_problem(refused, 422, "unknown_tool_call")
    assert body["errors"][0]["loc"] == ["body", "messages", 0, "tool_call_id"]
    # A batch of one names its field as a batch does; a single append, as its body does.
    alone = {"messages": [items[2] | {"tool_call_id": "call_z"}]}
    refused = await client.post(
        f"{_messages(session_id)}/batch", json=alone, headers=account.headers
    )
    body = assert_problem(refused, 422, "unknown_tool_call")
    assert body["errors"][0]["loc"] == ["body", "messages", 0, "tool_call_id"]
    refused = await client.post(
        _messages(session_id), json=alone["messages"][0], headers=account.headers
    )
    body = assert_problem(refused, 422, "unknown_tool_call")
    assert body["errors"][0]["loc"] == ["body", "tool_call_id"]
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert len(listed) == 3


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"role": "user", "content": "q", "tool_calls": CALLS}, ("body", "tool_calls")),
        ({"role": "assistant", "content": "a", "tool_call_id": "call_a"}, ("body", "tool_call_id")),
        ({"role": "tool", "content": "r"}, ("body", "tool_call_id")),
        ({"role": "tool", "content": "r", "tool_call_id": ""}, ("body", "tool_call_id")),
        ({"role": "assistant", "content": "", "tool_calls": []}, ("body", "tool_calls")),
        (
            {"role": "assistant", "content": "", "tool_calls": [CALLS[0], CALLS[0]]},
            ("body", "tool_calls"),
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [CALLS[0] | {"id": ""}]},
            ("body", "tool_calls", 0, "id"),
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [CALLS[0] | {"name": "run tests"}]},
            ("body", "tool_calls", 0, "name"),
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [CALLS[0] | {"arguments": {}}]},
            ("body", "tool_calls", 0, "arguments"),
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [CALLS[0] | {"type": "x"}]},
            ("body", "tool_calls", 0, "type"),
        ),
    ],
)
async def test_malformed_tool_fields_are_refused_at_the_field(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    account, session_id = await new_session(factory)

    response = await _append(client, account, session_id, **body)

    assert_validation_error(response, *loc)
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert listed == []


async def test_a_result_must_answer_a_call_of_the_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, _ = await _calling_session(client, factory)
    elsewhere = (await factory.chat_session(account))["id"]

    unknown = await _append(
        client, account, session_id, role="tool", content="r", tool_call_id="call_x"
    )
    other_session = await _append(
        client, account, elsewhere, role="tool", content="r", tool_call_id="call_a"
    )

    body = assert_problem(unknown, 422, "unknown_tool_call")
    assert body["errors"][0]["loc"] == ["body", "tool_call_id"]
    assert "call_x" in body["detail"]
    assert_problem(other_session, 422, "unknown_tool_call")


async def test_another_users_session_is_not_found_not_probed(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, session_id, _ = await _calling_session(client, factory)
    stranger = await factory.account()

    response = await _append(
        client, stranger, session_id, role="tool", content="r", tool_call_id="call_a"
    )

    assert_problem(response, 404, "session_not_found")


async def test_only_an_assistant_message_takes_tool_calls_on_change(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    user = await factory.message(account, session_id, content="q")
    answer = await factory.message(account, session_id, role="assistant", status="pending")

    refused = await client.patch(
        message_path(session_id, user["id"]), json={"tool_calls": CALLS}, headers=account.headers
    )
    completed = await client.patch(
        message_path(session_id, answer["id"]),
        json={"status": "complete", "content": "", "tool_calls": CALLS},
        headers=account.headers,
    )

    assert_validation_error(refused, "body", "tool_calls")
    assert completed.status_code == 200, completed.text
    assert completed.json()["tool_calls"] == CALLS
    answered = await _append(
        client, account, session_id, role="tool", content="ok", tool_call_id="call_b"
    )
    assert answered.status_code == 201, answered.text


async def test_context_keeps_a_call_with_all_its_results(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    items = [
        {"role": "user", "content": "q", "token_count": 5},
        {"role": "assistant", "content": "", "tool_calls": CALLS, "token_count": 5},
        {"role": "tool", "content": "r1", "tool_call_id": "call_a", "token_count": 5},
        {"role": "tool", "content": "r2", "tool_call_id": "call_b", "token_count": 5},
    ]
    created = await client.post(
        f"{_messages(session_id)}/batch", json={"messages": items}, headers=account.headers
    )
    assert created.status_code == 201, created.text

    async def context(max_tokens: int) -> list[tuple[str, Any, Any]]:
        response = await client.get(
            f"{API}/sessions/{session_id}/context",
            params={"max_tokens": max_tokens},
            headers=account.headers,
        )
        assert response.status_code == 200, response.text
        return [(m["role"], m["tool_calls"], m["tool_call_id"]) for m in response.json()["data"]]

    # Room for the results but not their call: none of them.
    for budget in (5, 10, 14):
        assert await context(budget) == []
    whole = [("assistant", CALLS, None), ("tool", None, "call_a"), ("tool", None, "call_b")]
    assert await context(15) == whole
    assert await context(20) == [("user", None, None), *whole]


async def test_export_and_import_keep_tool_calls(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, _ = await _calling_session(client, factory)
    for call in CALLS:
        await _append(
            client, account, session_id, role="tool", content="ok", tool_call_id=call["id"]
        )

    exported = await client.get(
        f"{API}/sessions/{session_id}/export", params={"format": "json"}, headers=account.headers
    )
    assert exported.status_code == 200, exported.text
    document = json.loads(exported.content)
    assert [(m["tool_calls"], m["tool_call_id"]) for m in document["messages"]] == [
        (None, None),
        (CALLS, None),
        (None, "call_a"),
        (None, "call_b"),
    ]
    other = await factory.account()
    imported = await client.post(f"{API}/sessions/import", json=document, headers=other.headers)
    assert imported.status_code == 201, imported.text
    copy = imported.json()["session"]["id"]
    listed = (await client.get(_messages(copy), headers=other.headers)).json()["data"]
    assert [(m["tool_calls"], m["tool_call_id"]) for m in listed] == [
        (None, None),
        (CALLS, None),
        (None, "call_a"),
        (None, "call_b"),
    ]
    # The copy is a session like any other: its calls are answered there.
    more = await _append(client, other, copy, role="tool", content="again", tool_call_id="call_a")
    assert more.status_code == 201, more.text


async def test_an_older_export_with_tool_messages_without_ids_still_imports(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    document = {
        "title": "before tool calls were fields",
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "calling", "metadata": {"tool_calls": ["x"]}},
            {"role": "tool", "content": "r"},
        ],
    }

    imported = await client.post(f"{API}/sessions/import", json=document, headers=account.headers)

    assert imported.status_code == 201, imported.text


# --- generation


async def _chat(
    client: httpx.AsyncClient, account: Account, session_id: str, **body: Any
) -> httpx.Response:
    return await client.post(
        chat_path(session_id), json={"stream": False, **body}, headers=account.headers
    )


async def test_a_turn_whose_model_calls_tools_then_answers_their_results(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script(
        "test",
        {"tool_calls": CALLS, "argument_chars": 3},
        {"text": "The clock is fixed. "},
    )

    calling = await _chat(client, account, session_id, content="Why?", tools=TOOLS)

    assert calling.status_code == 201, calling.text
    answer = calling.json()["assistant_message"]
    assert answer["status"] == "complete"
    assert answer["content"] == ""
    assert answer["tool_calls"] == CALLS  # the fragments joined
    assert answer["metadata"]["finish_reason"] == "tool_calls"
    [first] = await llm.requests()
    assert first["body"]["tools"] == TOOLS

    for call, result in zip(CALLS, ["def charge(): ...", "1 failed"], strict=True):
        appended = await _append(
            client, account, session_id, role="tool", content=result, tool_call_id=call["id"]
        )
        assert appended.status_code == 201, appended.text
    final = await _chat(client, account, session_id, tools=TOOLS)

    assert final.status_code == 201, final.text
    turn = final.json()
    assert turn["user_message"] is None
    assert turn["assistant_message"]["content"] == "The clock is fixed. "
    assert turn["assistant_message"]["tool_calls"] is None
    assert turn["assistant_message"]["metadata"]["finish_reason"] == "stop"
    _, second = await llm.requests()
    assert second["body"]["tools"] == TOOLS
    assert second["body"]["messages"] == [
        {"role": "user", "content": "Why?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in CALLS
            ],
        },
        {"role": "tool", "content": "def charge(): ...", "tool_call_id": "call_a"},
        {"role": "tool", "content": "1 failed", "tool_call_id": "call_b"},
    ]
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert [m["role"] for m in listed] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_a_call_without_an_id_gets_one(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script("test", {"tool_calls": [{"name": "run_tests", "arguments": "{}"}]})

    response = await _chat(client, account, session_id, content="Run them", tools=TOOLS)

    assert response.status_code == 201, response.text
    [call] = response.json()["assistant_message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert (call["name"], call["arguments"]) == ("run_tests", "{}")


async def test_a_turn_without_content_needs_something_to_answer(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)

    empty = await _chat(client, account, session_id)
    await factory.message(account, session_id, content="q")
    await factory.message(account, session_id, role="assistant", content="", tool_calls=CALLS)
    unanswered = await _chat(client, account, session_id)
    await factory.message(account, session_id, role="tool", content="r", tool_call_id="call_a")
    half_answered = await _chat(client, account, session_id)

    assert_problem(empty, 409, "nothing_to_answer")
    assert_problem(unanswered, 409, "nothing_to_answer")
    body = assert_problem(half_answered, 409, "tool_results_missing")
    assert body["tool_call_ids"] == ["call_b"]
    # Nothing was stored, and the model was not asked.
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert [m["role"] for m in listed] == ["user", "assistant", "tool"]
    assert await llm.requests() == []


async def test_a_turn_without_content_answers_a_stored_user_message(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, content="Appended by the client")
    await llm.script("test", {"text": "Answered. "})

    response = await _chat(client, account, session_id)

    assert response.status_code == 201, response.text
    assert response.json()["assistant_message"]["content"] == "Answered. "
    [request] = await llm.requests()
    assert request["body"]["messages"] == [{"role": "user", "content": "Appended by the client"}]
    assert "tools" not in request["body"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, ("body", "tools")),
        ({"tools": [{"type": "web", "function": {"name": "f"}}]}, ("body", "tools", 0, "type")),
        ({"tools": [TOOLS[1], TOOLS[1]]}, ("body", "tools")),
        ({"tools": []}, ("body", "tools")),
        ({"context": {"documents": []}}, ("body", "context")),
    ],
)
async def test_malformed_turns_are_refused(
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    body: dict[str, Any],
    loc: tuple[str | int, ...],
) -> None:
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, content="q")

    response = await _chat(client, account, session_id, **body)

    assert_validation_error(response, *loc)
    assert await llm.requests() == []


async def test_arguments_are_limited_as_message_text(app_with: AppWith) -> None:
    async with app_with(max_message_bytes=64) as small:
        factory = Factory(small.client)
        account, session_id = await new_session(factory)
        call = CALLS[0] | {"arguments": json.dumps({"text": "é" * 40})}  # 80+ bytes

        response = await _append(
            small.client, account, session_id, role="assistant", content="", tool_calls=[call]
        )

        body = assert_problem(response, 413, "payload_too_large")
        assert "tool_calls[0].arguments" in body["detail"]


# --- tool_choice and parallel_tool_calls

READ_FILE = {"type": "function", "function": {"name": "read_file"}}


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "none"},
        {"tool_choice": "auto"},
        {"tool_choice": "required"},
        {"tool_choice": READ_FILE},
        {"parallel_tool_calls": False},
        {"parallel_tool_calls": True},
        {"tool_choice": "required", "parallel_tool_calls": False},
    ],
)
async def test_tool_choice_and_parallel_tool_calls_are_sent_as_given(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer, fields: dict[str, Any]
) -> None:
    account, session_id = await new_session(factory)

    response = await _chat(client, account, session_id, content="Why?", tools=TOOLS, **fields)

    assert response.status_code == 201, response.text
    [request] = await llm.requests()
    sent = request["body"]
    assert {key: sent[key] for key in ("tool_choice", "parallel_tool_calls") if key in sent} == (
        fields
    )
    assert request["body"]["tools"] == TOOLS


async def test_without_them_neither_is_sent(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)

    with_tools = await _chat(client, account, session_id, content="Why?", tools=TOOLS)
    nulls = await _chat(
        client,
        account,
        session_id,
        content="And?",
        tools=TOOLS,
        tool_choice=None,
        parallel_tool_calls=None,
    )

    assert with_tools.status_code == nulls.status_code == 201, (with_tools.text, nulls.text)
    for request in await llm.requests():
        assert request["body"]["tools"] == TOOLS
        assert not {"tool_choice", "parallel_tool_calls"} & request["body"].keys()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        # Only with tools, whatever the value (OpenAI refuses them without tools too).
        ({"tool_choice": "none"}, ("body", "tool_choice")),
        ({"tool_choice": "auto"}, ("body", "tool_choice")),
        ({"tool_choice": READ_FILE}, ("body", "tool_choice")),
        ({"parallel_tool_calls": True}, ("body", "parallel_tool_calls")),
        ({"parallel_tool_calls": False, "tools": None}, ("body", "parallel_tool_calls")),
        # A named function is one of the turn's tools.
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "rm"}}},
            ("body", "tool_choice"),
        ),
        # OpenAI's shapes only.
        ({"tools": TOOLS, "tool_choice": "sometimes"}, ("body", "tool_choice")),
        ({"tools": TOOLS, "tool_choice": 1}, ("body", "tool_choice")),
        (
            {"tools": TOOLS, "tool_choice": {"function": {"name": "read_file"}}},
            ("body", "tool_choice", "function", "type"),
        ),
        (
            {"tools": TOOLS, "tool_choice": READ_FILE | {"type": "web"}},
            ("body", "tool_choice", "function", "type"),
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "a b"}}},
            ("body", "tool_choice", "function", "function", "name"),
        ),
        (
            {"tools": TOOLS, "tool_choice": READ_FILE | {"strict": True}},
            ("body", "tool_choice", "function", "strict"),
        ),
        ({"tools": TOOLS, "parallel_tool_calls": "sometimes"}, ("body", "parallel_tool_calls")),
    ],
)
async def test_malformed_tool_choices_are_refused_at_the_field(
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    body: dict[str, Any],
    loc: tuple[str | int, ...],
) -> None:
    account, session_id = await new_session(factory)

    response = await _chat(client, account, session_id, content="q", **body)

    problem = assert_validation_error(response, *loc)
    assert loc[1] in problem["detail"]
    assert await llm.requests() == []
    listed = (await client.get(_messages(session_id), headers=account.headers)).json()["data"]
    assert listed == []


async def test_a_retry_of_a_turn_with_tool_choice_is_the_same_turn(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    headers = {**account.headers, "Idempotency-Key": "turn-tool-choice"}
    body = {
        "content": "Why?",
        "tools": TOOLS,
        "tool_choice": READ_FILE,
        "parallel_tool_calls": False,
        "stream": False,
    }

    first = await client.post(chat_path(session_id), json=body, headers=headers)
    # The same body with its keys in another order is the same request.
    again = await client.post(
        chat_path(session_id),
        json={**body, "tool_choice": {"function": {"name": "read_file"}, "type": "function"}},
        headers=headers,
    )
    other_choice = await client.post(
        chat_path(session_id), json={**body, "tool_choice": "auto"}, headers=headers
    )
    other_parallel = await client.post(
        chat_path(session_id), json={**body, "parallel_tool_calls": True}, headers=headers
    )
    left_out = await client.post(
        chat_path(session_id),
        json={k: v for k, v in body.items() if k != "tool_choice"},
        headers=headers,
    )

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    for reused in (other_choice, other_parallel, left_out):
        assert_problem(reused, 409, "idempotency_key_reused")
    assert len(await llm.requests()) == 1


def _sent_call(call: dict[str, str]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"]},
    }


async def test_a_turn_after_calls_left_without_results_sends_no_call_without_its_result(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """The user moved on instead of running the tools: a call without its result (or a result
    without its call) makes providers refuse the request, and every later turn of the session
    failed with it."""
    account, session_id, _ = await _calling_session(client, factory)
    # Only the first call is answered.
    answered = await _append(
        client, account, session_id, role="tool", content="def charge(): ...", tool_call_id="call_a"
    )
    assert answered.status_code == 201, answered.text
    await llm.script("test", {"text": "A guess. "}, {"text": "Another. "})

    guessed = await _chat(client, account, session_id, content="Never mind, just guess.")
    assert guessed.status_code == 201, guessed.text
    again = await _chat(client, account, session_id, content="And once more?")
    assert again.status_code == 201, again.text

    first, second = await llm.requests()
    assert first["body"]["messages"] == [
        {"role": "user", "content": "Why does test_billing fail?"},
        {"role": "assistant", "content": None, "tool_calls": [_sent_call(CALLS[0])]},
        {"role": "tool", "content": "def charge(): ...", "tool_call_id": "call_a"},
        {"role": "user", "content": "Never mind, just guess."},
    ]
    assert second["body"]["messages"][-3:] == [
        {"role": "user", "content": "Never mind, just guess."},
        {"role": "assistant", "content": "A guess. "},
        {"role": "user", "content": "And once more?"},
    ]


async def test_calls_without_any_result_leave_the_text_of_their_message(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, content="Why?")
    calling = await _append(
        client, account, session_id, role="assistant", content="Let me look.", tool_calls=CALLS
    )
    assert calling.status_code == 201, calling.text
    await llm.script("test", {"text": "A guess. "})

    response = await _chat(client, account, session_id, content="Skip the tools.")

    assert response.status_code == 201, response.text
    [request] = await llm.requests()
    assert request["body"]["messages"] == [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Let me look."},
        {"role": "user", "content": "Skip the tools."},
    ]


async def test_a_turn_in_a_session_with_tool_messages_without_ids_sends_no_result_alone(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Exports made before tool calls were fields import tool messages without a call."""
    account = await factory.account()
    document = {
        "title": "before tool calls were fields",
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "calling"},
            {"role": "tool", "content": "r"},
            {"role": "assistant", "content": "done"},
        ],
    }
    imported = await client.post(f"{API}/sessions/import", json=document, headers=account.headers)
    assert imported.status_code == 201, imported.text
    await llm.script("test", {"text": "Now this. "})

    response = await _chat(client, account, imported.json()["session"]["id"], content="and now?")

    assert response.status_code == 201, response.text
    [request] = await llm.requests()
    assert request["body"]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "calling"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "and now?"},
    ]


async def test_calls_cut_off_by_the_output_limit_keep_finish_reason_length(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A client runs the calls of a `tool_calls` answer; arguments cut off mid-JSON must not
    look like a finished call."""
    account, session_id = await new_session(factory)
    cut = [{"id": "call_1", "name": "read_file", "arguments": '{"path": "bil'}]
    await llm.script("test", {"tool_calls": cut, "finish_reason": "length"})

    response = await _chat(
        client, account, session_id, content="Why?", tools=TOOLS, max_output_tokens=5
    )

    assert response.status_code == 201, response.text
    answer = response.json()["assistant_message"]
    assert (answer["status"], answer["tool_calls"]) == ("complete", cut)
    assert answer["metadata"]["finish_reason"] == "length"
