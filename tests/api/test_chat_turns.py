"""POST /chat: the service calls the model (the test provider, a real HTTP server of its own),
streams the answer into the store, and records its usage."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from tests.assertions import assert_problem, assert_validation_error, metric_sample
from tests.backends import Backend
from tests.conftest import AppWith, running_app
from tests.factories import API, Factory
from tests.support.chat import (
    SECRET,
    archive_session,
    chat_app,
    chat_path,
    chat_settings,
    events_of,
    first_answer,
    message_path,
    new_session,
    streamed_text,
    wait_for_outcome,
    wait_for_status,
)
from tests.support.llm_server import DEFAULT_TEXT, LlmServer, default_text
from tests.support.logs import warnings_of


@pytest.fixture(scope="module")
async def app(backend: Backend, llm: LlmServer) -> AsyncIterator[FastAPI]:
    async with running_app(chat_settings(backend, llm)) as started:
        yield started


async def test_chat_needs_credentials_and_your_own_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, session_id = await new_session(factory)
    other = await factory.account()

    anonymous = await client.post(chat_path(session_id), json={"content": "hi"})
    foreign = await client.post(
        chat_path(session_id), json={"content": "hi"}, headers=other.headers
    )

    assert_problem(anonymous, 401, "unauthorized")
    assert_problem(foreign, 404, "session_not_found")


async def test_a_turn_streams_its_answer_and_stores_it_with_its_usage(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)

    response = await client.post(
        chat_path(session_id), json={"content": "Why does it fail?"}, headers=account.headers
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    turn = events[0]
    assert (turn.event, turn.id) == ("turn", "0")
    user, answer = turn.data["user_message"], turn.data["assistant_message"]
    assert (user["seq"], user["role"], user["status"]) == (1, "user", "complete")
    assert user["content"] == "Why does it fail?"
    assert (answer["seq"], answer["role"], answer["status"]) == (2, "assistant", "pending")
    assert answer["model"] == "test"
    # Then exactly the answer's message stream: deltas whose ids are code-point offsets.
    deltas = [event for event in events[1:] if event.event == "delta"]
    assert streamed_text(events) == DEFAULT_TEXT
    ends = [int(event.data["offset"]) for event in deltas]
    assert [event.id for event in deltas] == [str(end) for end in ends]
    assert ends == sorted(ends) and ends[-1] == len(DEFAULT_TEXT)
    done = events[-1]
    assert done.event == "done"
    assert done.data == {"status": "complete", "error_message": None, "length": len(DEFAULT_TEXT)}

    stored = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    message = stored.json()
    assert message["status"] == "complete"
    assert message["content"] == DEFAULT_TEXT
    assert message["token_count"] == 13  # the provider's completion tokens
    assert message["latency_ms"] >= 0
    assert message["metadata"]["finish_reason"] == "stop"
    assert message["metadata"]["prompt_tokens"] == 11
    assert message["metadata"]["completion_tokens"] == 13
    assert isinstance(message["metadata"]["ttft_ms"], int)
    session = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert session.json()["total_tokens"] == 13
    assert session.json()["message_count"] == 2
    [request] = await llm.requests()
    assert request["authorization"] == f"Bearer {SECRET}"
    assert request["body"]["stream"] is True
    assert request["body"]["stream_options"] == {"include_usage": True}


def _text_chunk(text: str, index: object = 0) -> str:
    return json.dumps({"choices": [{"index": index, "delta": {"content": text}}]})


_STOP = json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})


_OUT_OF_RANGE = {"choices": [], "usage": {"prompt_tokens": -5, "completion_tokens": 10**12}}


@pytest.mark.parametrize(
    ("behaviour", "text"),
    [
        ({"text": "no usage here ", "usage": False}, "no usage here "),
        ({"raw": [_text_chunk("Hi"), _STOP, json.dumps(_OUT_OF_RANGE)]}, "Hi"),
    ],
    ids=["none sent", "out of range"],
)
async def test_without_usage_the_answer_has_no_token_count(
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    behaviour: dict[str, Any],
    text: str,
) -> None:
    """None sent, or counts outside 0 to 100,000,000 (a negative or huge one failed the
    answer, and stuck in the token metric)."""
    account, session_id = await new_session(factory)
    await llm.script("other", behaviour)

    response = await client.post(
        chat_path(session_id),
        json={"content": "hi", "model": "other", "stream": False},
        headers=account.headers,
    )

    assert response.status_code == 201, response.text
    answer = response.json()["assistant_message"]
    assert (answer["content"], answer["model"]) == (text, "other")
    assert answer["token_count"] is None
    assert answer["metadata"]["prompt_tokens"] is None
    assert answer["metadata"]["completion_tokens"] is None
    session = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert session.json()["total_tokens"] == 0


async def test_stream_false_waits_and_answers_201_with_both_messages(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)

    response = await client.post(
        chat_path(session_id), json={"content": "hi", "stream": False}, headers=account.headers
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["object"] == "chat.turn"
    assert body["user_message"]["content"] == "hi"
    assert body["assistant_message"]["status"] == "complete"
    assert body["assistant_message"]["content"] == DEFAULT_TEXT


async def test_stream_false_answers_202_when_the_time_limit_comes_first(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    text = default_text(30)
    await llm.script("slow", {"text": text, "delay": 0.2})  # 6 s; the limit is 4 s

    response = await client.post(
        chat_path(session_id),
        json={"content": "hi", "stream": False, "model": "slow"},
        headers=account.headers,
    )

    assert response.status_code == 202, response.text
    answer = response.json()["assistant_message"]
    assert answer["status"] == "in_progress"
    assert text.startswith(answer["partial_content"]) and answer["partial_content"]
    # The generation goes on without the request.
    finished = await wait_for_status(client, account, session_id, answer["id"])
    assert (finished["status"], finished["content"]) == ("complete", text)


async def test_the_answer_is_coalesced_into_few_deltas(app_with: AppWith, llm: LlmServer) -> None:
    text = default_text(40)
    await llm.script("slow", {"text": text, "delay": 0.01})
    async with chat_app(app_with, llm, generation_flush_seconds=0.25) as chat:
        client = chat.client
        account, session_id = await new_session(chat.factory)
        counters = chat.state.counters
        before = counters.deltas_appended

        response = await client.post(
            chat_path(session_id),
            json={"content": "hi", "model": "slow"},
            headers=account.headers,
        )

        assert streamed_text(events_of(response.text)) == text
        writes = counters.deltas_appended - before
        # 40 tokens over about 0.4 s: the first at once, then one write per 0.25 s at most.
        assert 1 <= writes <= 4, writes


async def test_the_history_and_the_rag_context_reach_the_provider_as_documented(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(
        factory, system_prompt="You are a careful reviewer of Python tests."
    )
    batch = [
        {"role": "user", "content": "What does the billing module do?"},
        {"role": "assistant", "content": "It computes invoices."},
        {"role": "user", "content": "And the clock?"},
        {"role": "assistant", "status": "failed", "partial_content": "It uses a fix"},
        {"role": "assistant", "status": "pending"},  # open: not history
        {"role": "assistant", "status": "failed"},  # nothing kept: left out
    ]
    stored = await client.post(
        f"{API}/sessions/{session_id}/messages/batch",
        json={"messages": batch},
        headers=account.headers,
    )
    assert stored.status_code == 201, stored.text
    context = {
        "documents": [
            {
                "id": "doc-7",
                "title": "billing/clock.py",
                "source": "github.com/acme/api",
                "text": "NOW = datetime(2026, 1, 1)",
                "score": 0.82,
            },
            {"id": "doc-9", "score": 0.4},  # no text: left out
            {"content": 'Tests "freeze" time <here>.'},
        ],
        "reranker": "bge-v2",
    }

    response = await client.post(
        chat_path(session_id),
        json={"content": "Why does test_billing fail?", "context": context, "stream": False},
        headers=account.headers,
    )

    assert response.status_code == 201, response.text
    assert response.json()["user_message"]["context"] == context
    [request] = await llm.requests()
    assert request["body"]["model"] == "test"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "You are a careful reviewer of Python tests."},
        {"role": "user", "content": "What does the billing module do?"},
        {"role": "assistant", "content": "It computes invoices."},
        {"role": "user", "content": "And the clock?"},
        {"role": "assistant", "content": "It uses a fix"},
        {
            "role": "user",
            "content": (
                "<documents>\n"
                '<document index="1" id="doc-7" title="billing/clock.py" '
                'source="github.com/acme/api">\n'
                "NOW = datetime(2026, 1, 1)\n"
                "</document>\n"
                '<document index="2">\n'
                'Tests "freeze" time <here>.\n'
                "</document>\n"
                "</documents>\n"
                "\n"
                "Why does test_billing fail?"
            ),
        },
    ]


async def test_a_turn_may_set_its_system_prompt_temperature_and_output_limit(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory, system_prompt="the session's")

    response = await client.post(
        chat_path(session_id),
        json={
            "content": "hi",
            "system": "this turn's",
            "temperature": 0.2,
            "max_output_tokens": 50,
            "stream": False,
        },
        headers=account.headers,
    )

    assert response.status_code == 201, response.text
    [request] = await llm.requests()
    body = request["body"]
    assert body["messages"][0] == {"role": "system", "content": "this turn's"}
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)


async def test_the_history_is_cut_as_context_cuts_it(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    # 8192 tokens for the prompt (LLM_CONTEXT_TOKENS' default); the turn takes 1.
    batch = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"old {i}", "token_count": 3000}
        for i in range(5)
    ]
    await client.post(
        f"{API}/sessions/{session_id}/messages/batch",
        json={"messages": batch},
        headers=account.headers,
    )
    window = await client.get(
        f"{API}/sessions/{session_id}/context",
        params={"max_tokens": 8191},
        headers=account.headers,
    )

    await client.post(
        chat_path(session_id), json={"content": "hi", "stream": False}, headers=account.headers
    )

    [request] = await llm.requests()
    sent = [message["content"] for message in request["body"]["messages"]]
    assert sent == ["old 3", "old 4", "hi"]
    assert [message["content"] for message in window.json()["data"]] == ["old 3", "old 4"]


async def test_a_retry_with_the_same_key_is_the_same_turn_and_calls_the_model_once(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    headers = {**account.headers, "Idempotency-Key": "turn-1"}
    body = {"content": "hi", "stream": False}

    first = await client.post(chat_path(session_id), json=body, headers=headers)
    again = await client.post(chat_path(session_id), json=body, headers=headers)
    # Streamed this time: the same turn, its answer replayed from the store.
    streamed = await client.post(
        chat_path(session_id), json={**body, "stream": True}, headers=headers
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    events = events_of(streamed.text)
    assert events[0].data["assistant_message"]["id"] == first.json()["assistant_message"]["id"]
    assert streamed_text(events) == DEFAULT_TEXT
    assert len(await llm.requests()) == 1
    session = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert session.json()["message_count"] == 2
    reused = await client.post(chat_path(session_id), json={"content": "other"}, headers=headers)
    assert_problem(reused, 409, "idempotency_key_reused")


async def test_retries_at_the_same_time_are_one_turn_and_one_model_call(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """The first claims the key; the others wait for its commit and replay its turn."""
    account, session_id = await new_session(factory)
    headers = {**account.headers, "Idempotency-Key": "turn-at-once"}
    body = {"content": "hi", "stream": False}

    answers = await asyncio.gather(
        *(client.post(chat_path(session_id), json=body, headers=headers) for _ in range(4))
    )

    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["assistant_message"]["id"] for a in answers}) == 1
    assert len(await llm.requests()) == 1
    session = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert session.json()["message_count"] == 2


async def test_a_turn_in_an_archived_session_restores_it_first(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """The turn's append finds the session archived (its statement is refused), restores the
    messages and appends after them; the prompt holds the restored history."""
    account, session_id = await new_session(factory, system_prompt="Be brief.")
    await factory.message(account, session_id, content="before the archive")
    await factory.message(account, session_id, role="assistant", content="an old answer")
    report = await archive_session(app, session_id)
    assert (report.sessions, report.messages) == (1, 2)

    response = await client.post(
        chat_path(session_id), json={"content": "after it"}, headers=account.headers
    )

    assert response.status_code == 200, response.text
    turn = events_of(response.text)[0].data
    assert (turn["user_message"]["seq"], turn["assistant_message"]["seq"]) == (3, 4)
    assert streamed_text(events_of(response.text)) == DEFAULT_TEXT
    [request] = await llm.requests()
    assert [message["content"] for message in request["body"]["messages"]] == [
        "Be brief.",
        "before the archive",
        "an old answer",
        "after it",
    ]


async def test_a_turn_appends_at_the_expected_seq_only_and_titles_the_session(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, content="first")
    body = {"content": "Why does the billing test fail?", "stream": False}

    stale = await client.post(
        chat_path(session_id), json={**body, "expected_last_seq": 0}, headers=account.headers
    )
    current = await client.post(
        chat_path(session_id), json={**body, "expected_last_seq": 1}, headers=account.headers
    )

    assert_problem(stale, 409, "seq_conflict")
    assert current.status_code == 201, current.text
    turn = current.json()
    assert (turn["user_message"]["seq"], turn["assistant_message"]["seq"]) == (2, 3)
    assert len(await llm.requests()) == 1
    session = (await client.get(f"{API}/sessions/{session_id}", headers=account.headers)).json()
    assert session["message_count"] == 3
    assert session["title"] == "first"  # set by the first user message, kept
    untitled, fresh_id = await new_session(factory)
    titled = await client.post(chat_path(fresh_id), json=body, headers=untitled.headers)
    assert titled.status_code == 201, titled.text
    fresh = (await client.get(f"{API}/sessions/{fresh_id}", headers=untitled.headers)).json()
    assert fresh["title"] == "Why does the billing test fail?"


async def test_a_model_the_server_does_not_list_is_refused(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)

    response = await client.post(
        chat_path(session_id), json={"content": "hi", "model": "gpt-9"}, headers=account.headers
    )

    body = assert_validation_error(response, "body", "model")
    assert "test" in body["detail"]
    assert await llm.requests() == []


async def test_a_context_too_deep_is_refused_with_or_without_a_key(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Deeper than serialising can go (about 255 levels): the key's fingerprint serialises the
    body, and must not meet it before the depth rule."""
    account, session_id = await new_session(factory)
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"a": deep}

    for headers in (account.headers, {**account.headers, "Idempotency-Key": "deep"}):
        response = await client.post(
            chat_path(session_id), json={"content": "hi", "context": deep}, headers=headers
        )
        assert_validation_error(response, "body", "context")
    messages = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
    assert messages.json()["data"] == []
    assert await llm.requests() == []


@pytest.mark.parametrize(
    ("raw", "status", "text", "error"),
    [
        ([_text_chunk("Hello")], "failed", "Hello", "without a finish reason"),
        ([_text_chunk("Hi"), "not json {"], "failed", "Hi", "not JSON"),
        (
            [_text_chunk("Hi"), json.dumps({"object": "error", "message": "overloaded"})],
            "failed",
            "Hi",
            "reported an error: overloaded",
        ),
        ([_text_chunk("x\ud83d"), _text_chunk("\ude00y"), _STOP], "complete", "x😀y", None),
        (
            [
                json.dumps(
                    {
                        "choices": [
                            {
                                "index": None,
                                "delta": {
                                    "content": [
                                        {"type": "text", "text": "Hel"},
                                        {"type": "text", "text": "lo"},
                                    ]
                                },
                            }
                        ]
                    }
                ),
                _STOP,
            ],
            "complete",
            "Hello",
            None,
        ),
    ],
    ids=["no-finish-reason", "not-json", "error-chunk", "split-pair", "content-parts"],
)
async def test_what_an_odd_provider_streams_is_kept_exactly_or_fails_with_the_text_kept(
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    raw: list[str],
    status: str,
    text: str,
    error: str | None,
) -> None:
    """A stream cut where a message ends, a chunk that is not JSON or reports an error: failed,
    its text kept (to be continued), not a complete answer nor an internal error. A surrogate
    pair split over two chunks, text in content parts or under `index: null`: kept exactly."""
    account, session_id = await new_session(factory)
    await llm.script("other", {"raw": raw})

    response = await client.post(
        chat_path(session_id),
        json={"content": "hi", "model": "other"},
        headers=account.headers,
    )

    assert response.status_code == 200, response.text
    answer_id = events_of(response.text)[0].data["assistant_message"]["id"]
    answer = await wait_for_status(client, account, session_id, answer_id)
    assert answer["status"] == status
    assert (answer["content"] if status == "complete" else answer["partial_content"]) == text
    assert streamed_text(events_of(response.text)) == text
    if error is not None:
        assert error in answer["error_message"]
        assert answer["metadata"]["error_kind"] == "provider"


async def _failed_turn(
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    model: str,
    behaviour: dict[str, Any],
    *,
    status: int = 502,
    code: str = "provider_error",
) -> tuple[httpx.Response, dict[str, Any], dict[str, Any]]:
    """A `stream: false` turn whose answer the provider, scripted with `behaviour`, fails: the
    response (checked to be the problem `status` `code`), its problem body and the answer as
    stored once it has failed."""
    account, session_id = await new_session(factory)
    await llm.script(model, behaviour)

    response = await client.post(
        chat_path(session_id),
        json={"content": "hi", "model": model, "stream": False},
        headers=account.headers,
    )

    problem = assert_problem(response, status, code)
    answer = await wait_for_status(client, account, session_id, problem["assistant_message_id"])
    return response, problem, answer


async def test_a_provider_error_quoting_the_key_in_part_shows_none_of_it(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Whole, as a URL carries it, cut short or masked in the middle: no run of 12 of the key's
    characters in the stored error or the problem answered."""
    quoted = f"key {SECRET[:-1]}, url key={quote(SECRET)}, masked {SECRET[:13]}****{SECRET[-13:]}"
    response, _, answer = await _failed_turn(
        client, factory, llm, "broken", {"status": 401, "error_message": quoted + " \x00"}
    )
    for shown in (answer["error_message"], response.text):
        assert not any(SECRET[i : i + 12] in shown for i in range(len(SECRET) - 11)), shown
    assert answer["error_message"].startswith("The model provider answered 401: key [redacted]")
    assert answer["metadata"]["provider_status"] == 401


async def test_a_provider_error_fails_the_answer_and_names_both_messages(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    response, problem, answer = await _failed_turn(client, factory, llm, "broken", {"status": 500})
    assert answer["status"] == "failed"
    assert answer["error_message"] == "The model provider answered 500: scripted 500"
    assert answer["metadata"]["error_kind"] == "status"
    assert problem["user_message_id"] != problem["assistant_message_id"]
    assert SECRET not in response.text


@pytest.mark.parametrize(
    "behaviour",
    [{"hang_after": 3}, {"idle_after": 3, "delay": 0.1}],
    ids=["silent", "empty-chunks"],
)
async def test_a_provider_that_goes_silent_is_a_timeout_and_keeps_the_text(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer, behaviour: dict[str, Any]
) -> None:
    """Nothing at all, or only empty chunks (a keep-alive, not an answer): LLM_TIMEOUT_SECONDS
    (1.5 s here) counts from the last chunk that carried text."""
    _, _, answer = await _failed_turn(
        client, factory, llm, "silent", behaviour, status=504, code="provider_timeout"
    )
    assert answer["status"] == "failed"
    assert answer["partial_content"] == "The fixture uses "
    assert answer["metadata"]["error_kind"] == "timeout"
    assert "LLM_TIMEOUT_SECONDS" in answer["error_message"]
    await wait_for_outcome(llm, "silent", "client left")


async def test_a_retried_request_has_the_whole_wait_for_its_first_token(
    app_with: AppWith, llm: LlmServer
) -> None:
    """The SDK's retry of a refused request (LLM_MAX_RETRIES) takes its backoff; the wait for
    the first token (LLM_TIMEOUT_SECONDS) starts with the request that answered, not before
    the first one."""
    async with chat_app(app_with, llm, llm_max_retries=1) as under_test:
        account, session_id = await new_session(under_test.factory)
        await llm.script("other", {"status": 503}, {"text": "Made it", "first_delay": 1.2})

        response = await under_test.client.post(
            chat_path(session_id),
            json={"content": "hi", "model": "other", "stream": False},
            headers=account.headers,
        )

    assert response.status_code == 201, response.text
    assert response.json()["assistant_message"]["content"] == "Made it"
    assert [request["outcome"] for request in await llm.requests("other")] == [
        "status 503",
        "complete",
    ]


async def test_an_answer_longer_than_the_limit_fails_and_keeps_its_text(
    app_with: AppWith, llm: LlmServer
) -> None:
    """LLM_MAX_GENERATION_SECONDS bounds one provider call, however steadily it streams; the
    text so far is kept, to be continued."""
    async with chat_app(app_with, llm, llm_max_generation_seconds=1.0) as under_test:
        account, session_id = await new_session(under_test.factory)
        await llm.script("slow", {"text": default_text(100), "delay": 0.1})

        response = await under_test.client.post(
            chat_path(session_id),
            json={"content": "hi", "model": "slow", "stream": False},
            headers=account.headers,
        )

        problem = assert_problem(response, 504, "provider_timeout")
        answer = await wait_for_status(
            under_test.client, account, session_id, problem["assistant_message_id"]
        )
    assert answer["status"] == "failed"
    assert "LLM_MAX_GENERATION_SECONDS" in answer["error_message"]
    assert answer["metadata"]["error_kind"] == "timeout"
    sent = answer["partial_content"]
    assert 3 <= len(sent.split()) < 100, sent
    assert default_text(100).startswith(sent)


async def test_one_live_generation_per_session(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script("slow", {"text": default_text(40), "delay": 0.1})
    first = asyncio.create_task(
        client.post(
            chat_path(session_id), json={"content": "one", "model": "slow"}, headers=account.headers
        )
    )
    answer = await first_answer(client, account, session_id)

    second = await client.post(
        chat_path(session_id), json={"content": "two"}, headers=account.headers
    )

    body = assert_problem(second, 409, "generation_in_progress")
    assert body["message_id"] == answer["id"]
    listed = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
    assert [m["content"] for m in listed.json()["data"] if m["role"] == "user"] == ["one"]
    await client.post(f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers)
    assert events_of((await first).text)[-1].data["status"] == "cancelled"


async def test_live_generations_per_user_are_limited(app_with: AppWith, llm: LlmServer) -> None:
    await llm.script("slow", {"text": default_text(40), "delay": 0.1})
    async with chat_app(app_with, llm, generation_concurrency_per_user=1) as chat:
        client, factory = chat.client, chat.factory
        account, session_id = await new_session(factory)
        other_session = (await factory.chat_session(account))["id"]
        first = asyncio.create_task(
            client.post(
                chat_path(session_id),
                json={"content": "one", "model": "slow"},
                headers=account.headers,
            )
        )
        answer = await first_answer(client, account, session_id)

        refused = await client.post(
            chat_path(other_session), json={"content": "two"}, headers=account.headers
        )
        someone_else, their_session = await new_session(factory)
        allowed = await client.post(
            chat_path(their_session),
            json={"content": "hi", "stream": False},
            headers=someone_else.headers,
        )

        assert_problem(refused, 429, "too_many_generations")
        assert refused.headers["Retry-After"] == "1"
        assert allowed.status_code == 201, allowed.text
        await client.post(
            f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers
        )
        await first


async def test_generations_per_process_are_limited(app_with: AppWith, llm: LlmServer) -> None:
    await llm.script("slow", {"text": default_text(40), "delay": 0.1})
    async with chat_app(app_with, llm, llm_max_concurrent=1) as chat:
        client, factory = chat.client, chat.factory
        account, session_id = await new_session(factory)
        first = asyncio.create_task(
            client.post(
                chat_path(session_id),
                json={"content": "one", "model": "slow"},
                headers=account.headers,
            )
        )
        answer = await first_answer(client, account, session_id)
        someone_else, their_session = await new_session(factory)

        refused = await client.post(
            chat_path(their_session), json={"content": "two"}, headers=someone_else.headers
        )

        problem = assert_problem(refused, 503, "generation_busy")
        assert "LLM_MAX_CONCURRENT" in problem["detail"]
        assert refused.headers["Retry-After"] == "1"
        listed = await client.get(
            f"{API}/sessions/{their_session}/messages", headers=someone_else.headers
        )
        assert listed.json()["data"] == []
        await client.post(
            f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers
        )
        await first


async def test_without_a_provider_chat_is_unavailable_and_the_rest_works(
    app_with: AppWith,
) -> None:
    async with app_with() as without_provider:
        client, factory = without_provider.client, without_provider.factory
        account, session_id = await new_session(factory)
        message = await factory.message(account, session_id, role="assistant", status="failed")

        turn = await client.post(
            chat_path(session_id), json={"content": "hi"}, headers=account.headers
        )
        continued = await client.post(
            f"{message_path(session_id, message['id'])}/continue", headers=account.headers
        )
        appended = await factory.message(account, session_id, content="still stored")

    problem = assert_problem(turn, 503, "generation_unavailable")
    assert "LLM_BASE_URL" in problem["detail"]
    assert_problem(continued, 503, "generation_unavailable")
    assert appended["seq"] == 2  # the refused turn stored nothing


async def test_a_session_keeps_its_system_prompt(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory, system_prompt="Answer in French.")
    path = f"{API}/sessions/{session_id}"

    read = await client.get(path, headers=account.headers)
    changed = await client.patch(
        path, json={"system_prompt": "Answer in German."}, headers=account.headers
    )
    cleared = await client.patch(path, json={"system_prompt": None}, headers=account.headers)
    too_long = await client.patch(
        path, json={"system_prompt": "x" * 100_001}, headers=account.headers
    )

    assert read.json()["system_prompt"] == "Answer in French."
    assert changed.json()["system_prompt"] == "Answer in German."
    assert cleared.json()["system_prompt"] is None
    assert_validation_error(too_long, "body", "system_prompt")


async def test_metrics_count_generations_tokens_ttft_and_provider_errors(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script("broken", {"status": 503})
    before = (await client.get("/metrics")).text

    await client.post(
        chat_path(session_id), json={"content": "hi", "stream": False}, headers=account.headers
    )
    await client.post(
        chat_path(session_id),
        json={"content": "hi", "model": "broken", "stream": False},
        headers=account.headers,
    )
    after = (await client.get("/metrics")).text

    def grew(name: str) -> float:
        return metric_sample(after, name) - metric_sample(before, name)

    assert grew('chat_store_generations_total{outcome="complete"}') == 1
    assert grew('chat_store_generations_total{outcome="failed"}') == 1
    assert grew('chat_store_provider_errors_total{kind="status"}') == 1
    assert grew('chat_store_generation_tokens_total{kind="completion"}') == 13
    assert grew('chat_store_generation_tokens_total{kind="prompt"}') == 11
    assert grew("chat_store_generation_ttft_seconds_count") == 1
    assert metric_sample(after, "chat_store_generations_live") == 0


async def test_a_failed_answer_is_logged_and_its_first_token_still_timed(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A provider that fails after its first tokens: the time to first token is observed (the
    histogram would otherwise look best while the provider degrades), and the failure is a
    warning in the log, not only a number in the metrics."""
    account, session_id = await new_session(factory)
    await llm.script("cut", {"fail_after": 3})
    before = (await client.get("/metrics")).text
    with warnings_of("chat_store.services.generation.answer") as said:
        response = await client.post(
            chat_path(session_id),
            json={"content": "hi", "model": "cut", "stream": False},
            headers=account.headers,
        )
    after = (await client.get("/metrics")).text

    assert_problem(response, 502, "provider_error")
    answer_id = response.json()["assistant_message_id"]
    assert (
        metric_sample(after, "chat_store_generation_ttft_seconds_count")
        - metric_sample(before, "chat_store_generation_ttft_seconds_count")
        == 1
    )
    assert any(answer_id in line and "failed (connection)" in line for line in said), said


async def test_a_streamed_turn_is_counted_among_the_answers_without_a_duration(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """A streamed turn, the default and the main traffic, is an answer sent (its status, when
    it ends); how long it streamed is not how long it took to answer: no duration."""
    account, session_id = await new_session(factory)
    route = 'method="POST",route="/api/v1/sessions/{session_id}/chat"'
    count = f'chat_store_http_requests_total{{{route},status="200"}}'
    durations = f"chat_store_http_request_duration_seconds_count{{{route}}}"
    before = (await client.get("/metrics")).text

    streamed = await client.post(
        chat_path(session_id), json={"content": "hi"}, headers=account.headers
    )
    after = (await client.get("/metrics")).text

    assert events_of(streamed.text)[-1].event == "done"
    assert metric_sample(after, count) - metric_sample(before, count) == 1
    assert metric_sample(after, durations) == metric_sample(before, durations)


async def test_every_labelled_generation_series_is_there_from_the_start(
    client: httpx.AsyncClient,
) -> None:
    """A rate over a window after a restart needs each series at 0 before its first event."""
    text = (await client.get("/metrics")).text
    for outcome in ("complete", "failed", "cancelled", "handed_over", "superseded"):
        assert f'chat_store_generations_total{{outcome="{outcome}"}}' in text
    for kind in ("timeout", "connection", "status", "provider"):
        assert f'chat_store_provider_errors_total{{kind="{kind}"}}' in text
    for kind in ("prompt", "completion"):
        assert f'chat_store_generation_tokens_total{{kind="{kind}"}}' in text
    # Counters read from the live objects say when they started, as the others do.
    assert "chat_store_deltas_appended_created " in text


READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}
TWO_READS = [
    {"id": "call_a", "name": "read_file", "arguments": '{"path": "a.py"}'},
    {"id": "call_b", "name": "read_file", "arguments": '{"path": "b.py"}'},
]


@pytest.mark.parametrize("call_index", ["each", "zero", "none"])
async def test_parallel_calls_are_kept_apart_however_the_provider_indexes_them(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer, call_index: str
) -> None:
    """OpenAI sends each call under its own index; Ollama sends them all under index 0, or
    (older versions) under none."""
    account, session_id = await new_session(factory)
    await llm.script("test", {"tool_calls": TWO_READS, "call_index": call_index})

    response = await client.post(
        chat_path(session_id),
        json={"content": "Read both", "tools": [READ_FILE], "stream": False},
        headers=account.headers,
    )

    assert response.status_code == 201, response.text
    answer = response.json()["assistant_message"]
    assert answer["tool_calls"] == TWO_READS
    assert answer["metadata"]["finish_reason"] == "tool_calls"


async def test_an_answer_that_only_calls_tools_has_its_time_to_first_token(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script("test", {"tool_calls": TWO_READS[:1]})
    before = (await client.get("/metrics")).text

    response = await client.post(
        chat_path(session_id),
        json={"content": "Read it", "tools": [READ_FILE], "stream": False},
        headers=account.headers,
    )

    assert response.status_code == 201, response.text
    answer = response.json()["assistant_message"]
    assert (answer["content"], answer["tool_calls"]) == ("", TWO_READS[:1])
    ttft_ms = answer["metadata"]["ttft_ms"]
    assert isinstance(ttft_ms, int) and ttft_ms >= 0
    after = (await client.get("/metrics")).text
    count = "chat_store_generation_ttft_seconds_count"
    assert metric_sample(after, count) - metric_sample(before, count) == 1


async def test_the_provider_urls_credentials_are_not_logged(
    app_with: AppWith, llm: LlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    """LLM_BASE_URL may carry a user and password; the SDK's HTTP client logs every request's
    URL at INFO, the level the service logs at."""
    password = "s3cret-of-the-provider"
    url = llm.base_url.replace("http://", f"http://bot:{password}@")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        async with chat_app(app_with, llm, llm_base_url=url, log_level="INFO") as chat:
            # The app's logging configuration replaced the root's handlers: capture again.
            root.addHandler(caplog.handler)
            account, session_id = await new_session(chat.factory)
            response = await chat.client.post(
                chat_path(session_id),
                json={"content": "hi", "stream": False},
                headers=account.headers,
            )
    finally:
        root.handlers[:], root.level = handlers, level

    assert response.status_code == 201, response.text
    assert len(await llm.requests()) == 1
    infos = [record for record in caplog.records if record.levelno == logging.INFO]
    assert any(record.name.startswith("chat_store") for record in infos)  # INFO is captured
    assert password not in caplog.text
    assert not [record for record in infos if record.name.startswith(("httpx", "httpcore"))]


async def test_a_turn_is_served_by_the_direct_path_with_fastapis_answers(
    client: httpx.AsyncClient,
    factory: Factory,
    solved: list[str],
    through_fastapi: Callable[[], None],
) -> None:
    """POST /chat is on the direct path (api/direct.py): a well-formed turn is served without
    FastAPI's dependency solving, a malformed one by FastAPI, and both answer as FastAPI does."""

    async def turn_and_refusal() -> list[tuple[int, Any]]:
        account, session_id = await new_session(factory)
        path = chat_path(session_id)
        solved.clear()
        answered = await client.post(
            path, json={"content": "hi", "stream": False}, headers=account.headers
        )
        served_directly = solved == []
        refused = await client.post(
            path, json={"content": "hi", "temperature": 9}, headers=account.headers
        )
        assert solved[-1] == path  # what the route's fields refuse is FastAPI's
        assert answered.status_code == 201, answered.text
        turn = answered.json()
        messages = [turn["user_message"], turn["assistant_message"]]
        return [
            (201, served_directly),
            (201, [(m["seq"], m["role"], m["status"], m["content"]) for m in messages]),
            (201, sorted(turn["assistant_message"])),
            (refused.status_code, refused.json()["errors"]),
        ]

    direct = await turn_and_refusal()
    through_fastapi()
    by_fastapi = await turn_and_refusal()

    assert direct[0] == (201, True)
    assert by_fastapi[0] == (201, False)
    assert direct[1] == (
        201,
        [(1, "user", "complete", "hi"), (2, "assistant", "complete", DEFAULT_TEXT)],
    )
    assert direct[1:] == by_fastapi[1:]
    assert direct[3][0] == 422
