"""Cancel and continue a generated answer; leases, renewal and takeover after a process died."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from chat_store.api.deps import AppState
from chat_store.crud import generations as generation_crud
from chat_store.models import Generation, MessageChunk
from chat_store.schemas.common import json_size
from chat_store.services.context import RequestContext
from chat_store.services.generation import store, turns
from chat_store.services.generation.answer import AnswerGenerator
from chat_store.services.generation.jobs import GenerationParams, Job
from chat_store.services.generation.runner import GenerationRunner
from tests.assertions import assert_problem
from tests.backends import Backend
from tests.conftest import AppUnderTest, AppWith, running_app
from tests.factories import API, Account, Factory
from tests.support.chat import (
    archive_session,
    chat_app,
    chat_path,
    chat_settings,
    events_of,
    first_answer,
    message_path,
    new_session,
    wait_for_status,
    wait_for_text,
)
from tests.support.llm_server import DEFAULT_TEXT, LlmServer, default_text


@pytest.fixture(scope="module")
async def app(backend: Backend, llm: LlmServer) -> AsyncIterator[FastAPI]:
    # Its own sweep only at start: the takeover tests choose which process sweeps.
    settings = chat_settings(
        backend, llm, generation_lease_seconds=1.5, generation_sweep_seconds=3600
    )
    async with running_app(settings) as started:
        yield started


async def wait_for_outcome(llm: LlmServer, model: str, outcome: str, timeout: float = 10) -> None:
    """Until the provider's (only) request for `model` ended as `outcome`."""
    deadline = time.monotonic() + timeout
    while True:
        requests = await llm.requests(model)
        if requests and requests[-1]["outcome"] == outcome:
            return
        assert time.monotonic() < deadline, requests
        await asyncio.sleep(0.05)


async def start_turn(
    client: httpx.AsyncClient, account: Account, session_id: str, model: str
) -> tuple[asyncio.Task[httpx.Response], dict[str, Any]]:
    """A streamed turn left running in the background, and its answer once it has text."""
    task = asyncio.create_task(
        client.post(
            chat_path(session_id), json={"content": "go", "model": model}, headers=account.headers
        )
    )
    return task, await first_answer(client, account, session_id)


# --- cancel


async def test_cancel_needs_credentials_and_your_own_message(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    answer = await factory.message(account, session_id, role="assistant", status="pending")
    other = await factory.account()
    path = f"{message_path(session_id, answer['id'])}/cancel"

    assert_problem(await client.post(path), 401, "unauthorized")
    assert_problem(await client.post(path, headers=other.headers), 404, "session_not_found")
    missing = f"{message_path(session_id, str(uuid.uuid4()))}/cancel"
    assert_problem(await client.post(missing, headers=account.headers), 404, "message_not_found")


async def test_cancel_stops_the_generation_and_keeps_its_text(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    text = default_text(100)
    await llm.script("slow", {"text": text, "delay": 0.05})
    turn, answer = await start_turn(client, account, session_id, "slow")
    path = f"{message_path(session_id, answer['id'])}/cancel"

    cancelled = await client.post(path, headers=account.headers)
    again = await client.post(path, headers=account.headers)

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["error_message"]) == ("cancelled", "Cancelled by request")
    assert body["metadata"]["finish_reason"] == "cancelled"
    kept = body["partial_content"]
    assert kept and text.startswith(kept) and kept != text
    assert again.status_code == 200 and again.json()["partial_content"] == kept
    # The provider call is stopped, and nothing more is written.
    await wait_for_outcome(llm, "slow", "client left")
    events = events_of((await turn).text)
    assert events[-1].data == {
        "status": "cancelled",
        "error_message": "Cancelled by request",
        "length": len(kept),
    }
    await asyncio.sleep(0.3)
    stored = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    assert stored.json()["partial_content"] == kept


async def test_cancel_from_another_process_stops_the_generation(
    app: FastAPI, app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """The answer is generated by `app`; the cancel reaches another process (another app on the
    same database and bus). The provider sends nothing more after two tokens, so the generating
    process can only learn of the cancel from the bus (Redis) or its lease renewal (SQLite,
    whose in-process bus does not cross processes)."""
    account, session_id = await new_session(factory)
    await llm.script("silent", {"hang_after": 2})
    turn, answer = await start_turn(client, account, session_id, "silent")
    async with chat_app(app_with, llm, generation_lease_seconds=1.5) as other:
        other_client = other.client
        cancelled = await other_client.post(
            f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers
        )
        assert cancelled.json()["status"] == "cancelled"
        await wait_for_outcome(llm, "silent", "client left", timeout=5)

    assert events_of((await turn).text)[-1].data["status"] == "cancelled"
    state: AppState = app.state.resources
    for _ in range(100):
        if not app.state.generation.running(uuid.UUID(answer["id"])):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the generating process did not stop")
    async with state.sessionmaker() as db:
        lease = await generation_crud.get(db, uuid.UUID(answer["id"]))
    assert lease is not None and lease.owner is None and lease.lease_expires_at is None


async def test_only_an_open_assistant_answer_can_be_cancelled(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    done = await factory.message(account, session_id, role="assistant", content="done")
    question = await factory.message(account, session_id, role="user", content="?")

    for message in (done, question):
        response = await client.post(
            f"{message_path(session_id, message['id'])}/cancel", headers=account.headers
        )
        assert_problem(response, 409, "invalid_transition")


# --- continue


async def test_continue_after_a_provider_failure_gives_the_partial_and_the_rest_once(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    text = default_text(30)
    await llm.script("cut", {"text": text, "fail_after": 7}, {"text": text})
    failed = await client.post(
        chat_path(session_id),
        json={"content": "go", "model": "cut", "stream": False},
        headers=account.headers,
    )
    problem = assert_problem(failed, 502, "provider_error")
    answer_id = problem["assistant_message_id"]
    answer = await wait_for_status(client, account, session_id, answer_id)
    partial = answer["partial_content"]
    assert answer["status"] == "failed" and partial and text.startswith(partial)
    assert answer["metadata"]["error_kind"] == "connection"

    continued = await client.post(
        f"{message_path(session_id, answer_id)}/continue", headers=account.headers
    )

    assert continued.status_code == 202, continued.text
    assert continued.json()["status"] == "in_progress"
    assert continued.json()["error_message"] is None
    done = await wait_for_status(client, account, session_id, answer_id)
    assert done["status"] == "complete"
    assert done["content"] == text  # the stored part, then the rest: nothing repeated or lost
    assert done["metadata"]["attempt"] == 2
    assert "error_kind" not in done["metadata"]  # the failure is over
    first, second = await llm.requests("cut")
    # The same prompt, and the stored text as the start of the answer.
    assert second["body"]["messages"] == [
        *first["body"]["messages"],
        {"role": "assistant", "content": partial},
    ]


async def test_continue_sends_the_turns_tools_tool_choice_and_parallel_tool_calls_again(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    text = default_text(30)
    await llm.script("cut", {"text": text, "fail_after": 7}, {"text": text})
    tool_fields = {
        "tools": [{"type": "function", "function": {"name": "read_file"}}],
        "tool_choice": {"type": "function", "function": {"name": "read_file"}},
        "parallel_tool_calls": False,
    }
    failed = await client.post(
        chat_path(session_id),
        json={"content": "go", "model": "cut", "stream": False, **tool_fields},
        headers=account.headers,
    )
    answer_id = assert_problem(failed, 502, "provider_error")["assistant_message_id"]
    await wait_for_status(client, account, session_id, answer_id)

    continued = await client.post(
        f"{message_path(session_id, answer_id)}/continue", headers=account.headers
    )

    assert continued.status_code == 202, continued.text
    done = await wait_for_status(client, account, session_id, answer_id)
    assert (done["status"], done["content"]) == ("complete", text)
    first, second = await llm.requests("cut")
    for request in (first, second):
        assert {key: request["body"].get(key) for key in tool_fields} == tool_fields


async def test_continue_is_refused_while_the_answer_is_generated(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await llm.script("slow", {"text": default_text(60), "delay": 0.05})
    turn, answer = await start_turn(client, account, session_id, "slow")

    response = await client.post(
        f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
    )

    body = assert_problem(response, 409, "generation_in_progress")
    assert body["message_id"] == answer["id"]
    await client.post(f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers)
    await turn


async def test_only_a_failed_or_unfinished_answer_can_be_continued(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id = await new_session(factory)
    done = await factory.message(account, session_id, role="assistant", content="done")
    cancelled = await factory.message(account, session_id, role="assistant", status="cancelled")
    question = await factory.message(account, session_id, role="user", content="?")

    for message in (done, cancelled, question):
        response = await client.post(
            f"{message_path(session_id, message['id'])}/continue", headers=account.headers
        )
        assert_problem(response, 409, "invalid_transition")


async def test_an_abandoned_answer_a_client_wrote_can_be_continued(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, role="user", content="Why?")
    answer = await factory.message(
        account,
        session_id,
        role="assistant",
        status="in_progress",
        partial_content="The fixture uses a fi",
        model="other",
    )

    response = await client.post(
        f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
    )

    assert response.status_code == 202, response.text
    done = await wait_for_status(client, account, session_id, answer["id"])
    assert done["content"] == DEFAULT_TEXT
    [request] = await llm.requests()
    assert request["model"] == "other"
    assert request["body"]["messages"] == [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "The fixture uses a fi"},
    ]


async def _abandoned(
    factory: Factory, account: Account | None = None, **fields: Any
) -> tuple[Account, str, dict[str, Any]]:
    """A session with a question and an open answer of it, some of its text stored (of a new
    account, or of `account`)."""
    if account is None:
        account, session_id = await new_session(factory)
    else:
        session_id = (await factory.chat_session(account))["id"]
    await factory.message(account, session_id, role="user", content="Why?")
    answer = await factory.message(
        account,
        session_id,
        **{
            "role": "assistant",
            "status": "in_progress",
            "partial_content": "The fixture uses ",
            "model": "test",
            **fields,
        },
    )
    return account, session_id, answer


def _filled_metadata(settings: Any) -> dict[str, Any]:
    """Metadata a few bytes short of MAX_METADATA_BYTES: what the service adds to an answer's
    metadata (usage, finish reason, a failure) takes it over the limit."""
    limit = settings.max_metadata_bytes
    metadata = {"pad": "x" * (limit - 5 - json_size({"pad": ""}))}
    assert limit - 10 < json_size(metadata) <= limit
    return metadata


async def test_an_answer_whose_client_filled_its_metadata_still_completes_or_fails(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """MAX_METADATA_BYTES limits what the client writes: the usage and the failure the
    service records go in all the same, and the answer is not left open."""
    metadata = _filled_metadata(app.state.resources.settings)
    await llm.script("cut", {"text": default_text(30), "fail_after": 7})
    ends = {}
    for model in ("test", "cut"):
        account, session_id, answer = await _abandoned(factory, model=model, metadata=metadata)
        continued = await client.post(
            f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
        )
        assert continued.status_code == 202, continued.text
        ends[model] = await wait_for_status(client, account, session_id, answer["id"])

    assert ends["test"]["status"] == "complete"
    assert ends["test"]["content"] == DEFAULT_TEXT  # the stored start, then the rest
    assert ends["test"]["metadata"]["finish_reason"] == "stop"
    assert ends["cut"]["status"] == "failed"
    assert ends["cut"]["metadata"]["error_kind"] == "connection"
    for end in ends.values():
        assert end["metadata"]["pad"] == metadata["pad"]
    # A client's own write of that much more is refused, as before.
    refused = await client.patch(
        message_path(session_id, answer["id"]),
        json={"metadata": {**metadata, "more": "x" * 20}},
        headers=account.headers,
    )
    assert_problem(refused, 422, "validation_error")


# --- leases


async def _orphan(
    state: AppState,
    client: httpx.AsyncClient,
    factory: Factory,
    *,
    attempt: int = 1,
    params: dict[str, Any] | None = None,
    account: Account | None = None,
) -> tuple[Account, str, str]:
    """An answer whose process died mid-answer: open, some text stored, its lease run out."""
    account, session_id, answer = await _abandoned(factory, account)
    now = datetime.now(UTC)
    async with state.sessionmaker() as db, db.begin():
        await generation_crud.insert_generation(
            db,
            {
                "message_id": uuid.UUID(answer["id"]),
                "session_id": uuid.UUID(session_id),
                "user_id": uuid.UUID(account.user_id),
                "owner": "gone:1:dead",
                "lease_expires_at": now - timedelta(seconds=1),
                "attempt": attempt,
                "params": params or {"model": "test", "system": "Be brief."},
                "created_at": now,
                "updated_at": now,
            },
        )
    return account, session_id, answer["id"]


async def test_a_starting_process_takes_over_an_answer_whose_process_died(
    app: FastAPI, app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id, answer_id = await _orphan(app.state.resources, client, factory)

    # The next start (as on the embedded default) sweeps at once.
    async with chat_app(app_with, llm, generation_sweep_seconds=60):
        done = await wait_for_status(client, account, session_id, answer_id)

    assert done["status"] == "complete"
    assert done["content"] == DEFAULT_TEXT
    assert done["metadata"]["attempt"] == 2
    [request] = await llm.requests()
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "The fixture uses "},
    ]
    # Params stored before turns had tools or a tool_choice: none of them is sent.
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & request["body"].keys()


async def test_a_takeover_sends_the_turns_tool_choice_and_parallel_tool_calls(
    app: FastAPI, app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    tools = [{"type": "function", "function": {"name": "run_tests"}}]
    params = GenerationParams(
        model="test",
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "run_tests"}},
        parallel_tool_calls=True,
    )
    account, session_id, answer_id = await _orphan(
        app.state.resources, client, factory, params=params.to_dict()
    )

    async with chat_app(app_with, llm, generation_sweep_seconds=60):
        done = await wait_for_status(client, account, session_id, answer_id)

    assert done["status"] == "complete"
    [request] = await llm.requests()
    assert request["body"]["tools"] == tools
    assert request["body"]["tool_choice"] == {"type": "function", "function": {"name": "run_tests"}}
    assert request["body"]["parallel_tool_calls"] is True


async def test_an_answer_is_given_up_after_its_last_attempt(
    app: FastAPI, app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id, answer_id = await _orphan(app.state.resources, client, factory, attempt=3)

    async with chat_app(app_with, llm, generation_max_attempts=3):
        done = await wait_for_status(client, account, session_id, answer_id)

    assert done["status"] == "failed"
    assert "GENERATION_MAX_ATTEMPTS" in done["error_message"]
    assert done["partial_content"] == "The fixture uses "
    # The run that ended it: the third, whose process died.
    assert (done["metadata"]["error_kind"], done["metadata"]["attempt"]) == ("attempts", 3)
    assert await llm.requests() == []


async def test_a_takeover_that_fails_stops_neither_the_sweep_nor_the_renewals(
    app: FastAPI,
    app_with: AppWith,
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An expired answer whose takeover fails (here: its first one, made to raise) is the
    oldest of the sweep's every round: the others are taken all the same, and the leases of
    the answers generated here are renewed all along."""
    state = app.state.resources
    first = await _orphan(state, client, factory)
    second = await _orphan(state, client, factory)
    failing = uuid.UUID(first[2])
    take_over = GenerationRunner._take_over

    async def refused_for_one(runner: GenerationRunner, message_id: uuid.UUID) -> Job | None:
        if message_id == failing:
            raise RuntimeError("this answer cannot be taken over")
        return await take_over(runner, message_id)

    monkeypatch.setattr(GenerationRunner, "_take_over", refused_for_one)
    account, session_id = await new_session(factory)
    text = default_text(60)
    await llm.script("slow", {"text": text, "delay": 0.05})
    async with chat_app(
        app_with, llm, generation_lease_seconds=1.0, generation_sweep_seconds=0.2
    ) as generating:
        turn = asyncio.create_task(
            generating.client.post(
                chat_path(session_id),
                json={"content": "go", "model": "slow", "stream": False},
                headers=account.headers,
            )
        )
        answer = await first_answer(client, account, session_id)
        await asyncio.sleep(2.0)  # two leases of 1 s
        read_at = datetime.now(UTC)
        async with state.sessionmaker() as db:
            live = await generation_crud.get(db, uuid.UUID(answer["id"]))
        taken = await wait_for_status(client, second[0], second[1], second[2])
        response = await turn

    # Renewed: its lease, first set to end 1 s after the turn began, ends after this read.
    assert live is not None and live.lease_expires_at > read_at
    assert taken["status"] == "complete"
    assert response.status_code == 201, response.text
    assert response.json()["assistant_message"]["content"] == text
    async with state.sessionmaker() as db:
        stuck = await generation_crud.get(db, failing)
    assert stuck is not None and stuck.owner == "gone:1:dead"  # left for a later sweep


async def test_a_run_that_lost_its_lease_while_alive_never_makes_the_text_repeat(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A process goes on generating after its lease ran out (a long pause), and another takes
    the answer over: the first stops (told on the bus, or by its next renewal), and whatever
    both wrote meanwhile, the answer ends as the text the model gives, nothing in it twice."""
    account, session_id = await new_session(factory)
    text = default_text(120)
    await llm.script(
        "slow", {"text": text, "delay": 0.05}, {"text": text, "delay": 0.05, "first_delay": 0.4}
    )
    settings = {"generation_lease_seconds": 3.0, "generation_max_attempts": 6}
    async with chat_app(app_with, llm, generation_sweep_seconds=3600, **settings) as first:
        turn = asyncio.create_task(
            first.client.post(
                chat_path(session_id),
                json={"content": "go", "model": "slow"},
                headers=account.headers,
            )
        )
        started = await first_answer(client, account, session_id)
        answer = await wait_for_text(client, account, session_id, started["id"], 20)
        answer_id = uuid.UUID(answer["id"])
        state = first.app.state.resources
        async with state.sessionmaker() as db, db.begin():
            await db.execute(
                update(Generation)
                .where(Generation.message_id == answer_id)
                .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        async with chat_app(app_with, llm, generation_sweep_seconds=0.5, **settings):
            done = await wait_for_status(client, account, session_id, answer["id"], timeout=60)
            assert not first.app.state.generation.running(answer_id)
        turn.cancel()

    assert done["status"] == "complete"
    assert done["content"] == text
    assert done["metadata"]["attempt"] >= 2


async def test_a_guests_answer_claimed_mid_generation_completes_for_its_new_owner(
    app_with: AppWith, llm: LlmServer
) -> None:
    """The claim gives the user the guest's sessions and deletes the guest: the answer's lease
    goes with the sessions, and the run that writes as the guest hands it over to a sweep,
    which completes it as the user's."""
    text = default_text(40)
    await llm.script("slow", {"text": text, "delay": 0.1})
    settings = {"generation_lease_seconds": 1.5, "generation_sweep_seconds": 0.5}
    async with chat_app(app_with, llm, allow_guests=True, **settings) as chat:
        guest = {"X-Client-ID": str(uuid.uuid4())}
        created = await chat.client.post(f"{API}/sessions", json={}, headers=guest)
        session_id = created.json()["id"]
        turn = asyncio.create_task(
            chat.client.post(
                chat_path(session_id), json={"content": "go", "model": "slow"}, headers=guest
            )
        )
        messages = f"{API}/sessions/{session_id}/messages"
        for _ in range(300):
            answers = (await chat.client.get(messages, headers=guest)).json()["data"][1:]
            if answers and answers[0]["partial_content"]:
                break
            await asyncio.sleep(0.02)
        answer_id = answers[0]["id"]
        user = await chat.factory.account()

        claimed = await chat.client.post(
            f"{API}/auth/claim", json={"client_id": guest["X-Client-ID"]}, headers=user.headers
        )
        assert claimed.status_code == 200, claimed.text
        async with chat.state.sessionmaker() as db:
            lease = await generation_crud.get(db, uuid.UUID(answer_id))
        assert lease is not None and str(lease.user_id) == user.user_id

        done = await wait_for_status(chat.client, user, session_id, answer_id, timeout=20)
        turn.cancel()

    assert done["status"] == "complete"
    assert done["content"] == text
    assert done["metadata"]["attempt"] == 2


async def test_a_live_generation_renews_its_lease_and_is_not_taken_over(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Another process sweeps every 0.2 s while the answer takes three leases of 1 s."""
    account, session_id = await new_session(factory)
    text = default_text(60)
    await llm.script("slow", {"text": text, "delay": 0.05})
    watching = chat_app(app_with, llm, generation_lease_seconds=1.0, generation_sweep_seconds=0.2)
    async with watching, chat_app(app_with, llm, generation_lease_seconds=1.0) as generating:
        response = await generating.client.post(
            chat_path(session_id),
            json={"content": "go", "model": "slow", "stream": False},
            headers=account.headers,
        )

    assert response.status_code == 201, response.text
    assert response.json()["assistant_message"]["content"] == text
    assert len(await llm.requests()) == 1


async def test_a_process_that_stops_hands_its_generations_over(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    account, session_id = await new_session(factory)
    text = default_text(60)
    await llm.script("slow", {"text": text, "delay": 0.05})
    async with chat_app(app_with, llm) as stopping:
        http = stopping.client
        turn, answer = await start_turn(http, account, session_id, "slow")
        await asyncio.sleep(0.3)
        turn.cancel()  # the client leaves; then the process stops
    handed = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    kept = handed.json()["partial_content"]
    assert handed.json()["status"] == "in_progress" and text.startswith(kept)

    async with chat_app(app_with, llm):
        done = await wait_for_status(client, account, session_id, answer["id"])

    assert done["content"] == text
    assert done["metadata"]["attempt"] == 2
    assert [r["body"]["messages"][-1]["role"] for r in await llm.requests()] == [
        "user",
        "assistant",
    ]


async def test_a_takeover_claimed_as_the_process_stops_is_handed_over(
    app: FastAPI,
    app_with: AppWith,
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process begins to stop while its sweep claims a dead process's answer (the claim
    committed, its transaction still closing): the sweep finishes the takeover and hands the
    answer over at once, not counted as a run, rather than leave its lease held until it runs
    out (and the next run counted as though this process had died)."""
    state = app.state.resources
    _, _, answer_id = await _orphan(state, client, factory)
    take_over = GenerationRunner._take_over
    claimed = asyncio.Event()

    async def claimed_then_slow(runner: GenerationRunner, message_id: uuid.UUID) -> Job | None:
        job = await take_over(runner, message_id)
        claimed.set()
        await asyncio.sleep(0.3)  # the process begins to stop meanwhile
        return job

    monkeypatch.setattr(GenerationRunner, "_take_over", claimed_then_slow)
    async with chat_app(app_with, llm, generation_sweep_seconds=60):
        await asyncio.wait_for(claimed.wait(), timeout=10)

    async with state.sessionmaker() as db:
        lease = await generation_crud.get(db, uuid.UUID(answer_id))
    assert lease is not None
    assert (lease.owner, lease.attempt, lease.handovers) == (None, 2, 1)
    assert lease.lease_expires_at is not None
    assert lease.lease_expires_at <= datetime.now(UTC)  # the next sweep takes it at once


async def _generating_here(
    chat: AppUnderTest, account: Account, session_id: str, answer_id: str, stored: int
) -> int:
    """Until `chat`'s process holds the answer's lease and has stored more than `stored`
    characters of it; returns how many are stored."""
    runner = chat.app.state.generation
    deadline = time.monotonic() + 15
    while True:
        async with chat.state.sessionmaker() as db:
            lease = await generation_crud.get(db, uuid.UUID(answer_id))
        message = await chat.client.get(
            message_path(session_id, answer_id), headers=account.headers
        )
        length = len(message.json()["partial_content"] or "")
        if lease is not None and lease.owner == runner.owner and length > stored:
            return length
        assert time.monotonic() < deadline, (lease, message.json())
        await asyncio.sleep(0.02)


async def test_an_answer_handed_over_at_every_restart_is_not_given_up(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A rolling restart, more runs long than GENERATION_MAX_ATTEMPTS: each process stops while
    it generates the answer and hands it over to the next. None of them died: the answer is
    completed, each run counted in `attempt`."""
    account, session_id = await new_session(factory)
    text = default_text(200)
    slow = {"text": text, "delay": 0.05}
    await llm.script("slow", slow, slow, slow, {"text": text})  # the fourth run ends it
    settings = {"generation_max_attempts": 3}
    async with chat_app(app_with, llm, **settings) as first:
        turn, answer = await start_turn(first.client, account, session_id, "slow")
        stored = await _generating_here(first, account, session_id, answer["id"], 0)
        turn.cancel()  # the client leaves; then the process stops
    for _ in range(2):
        async with chat_app(app_with, llm, **settings) as restarted:  # it sweeps at start
            stored = await _generating_here(restarted, account, session_id, answer["id"], stored)

    async with chat_app(app_with, llm, **settings):
        done = await wait_for_status(client, account, session_id, answer["id"])

    assert done["status"] == "complete", done
    assert done["content"] == text
    assert done["metadata"]["attempt"] == 4
    assert len(await llm.requests()) == 4


@pytest.mark.parametrize(
    ("behaviour", "ended"),
    [
        ({"text": "A short answer. "}, "complete"),
        ({"text": "A short answer. Cut here", "fail_after": 3}, "failed"),  # a dropped stream
    ],
)
async def test_a_process_that_stops_as_its_last_write_is_made_ends_the_answer(
    app_with: AppWith,
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: dict[str, Any],
    ended: str,
) -> None:
    """The provider has answered all (or failed) and the write of its last text is under way
    as the process stops: the answer is completed (or failed) there, not handed over to call
    the model again."""
    account, session_id = await new_session(factory)
    text = "A short answer. "  # what the provider sends of its text (3 chunks)
    await llm.script("test", behaviour)
    append = store.append
    last_write, written = asyncio.Event(), asyncio.Event()

    async def held(ctx: RequestContext, answer: Any, delta: str, offset: int, lease: Any) -> int:
        if offset + len(delta) == len(text):  # the write whose text ends the answer
            last_write.set()
            await written.wait()
        return await append(ctx, answer, delta, offset, lease)

    monkeypatch.setattr(store, "append", held)
    async with chat_app(app_with, llm) as stopping:
        runner = stopping.app.state.generation
        turn = asyncio.create_task(
            stopping.client.post(
                chat_path(session_id), json={"content": "go"}, headers=account.headers
            )
        )
        await asyncio.wait_for(last_write.wait(), timeout=10)
        [live] = runner._live.values()
        assert live.reader is not None
        await asyncio.wait({live.reader}, timeout=10)
        assert live.reader.done()

        async def write_once_stopped() -> None:
            while live.stop_reason is None:
                await asyncio.sleep(0.01)
            written.set()

        releasing = asyncio.create_task(write_once_stopped())
        turn.cancel()  # the client leaves; then the process stops
    await releasing
    assert live.stop_reason == "shutdown"

    listed = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
    answer = listed.json()["data"][-1]
    assert answer["status"] == ended
    assert answer["metadata"]["attempt"] == 1
    if ended == "complete":
        assert answer["content"] == text
        assert answer["metadata"]["finish_reason"] == "stop"
        assert answer["metadata"]["completion_tokens"] == 3
    else:
        assert answer["partial_content"] == text
        assert answer["metadata"]["error_kind"] == "connection"
    assert len(await llm.requests()) == 1


async def test_a_process_that_lost_its_lease_stops_and_writes_nothing_more(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """As when the process was paused longer than its lease and another took the answer over:
    its writes stop at the takeover, before it hears of it (no stop on the bus here, and its
    next renewal is seconds away)."""
    account, session_id = await new_session(factory)
    text = default_text(100)
    await llm.script("slow", {"text": text, "delay": 0.05})
    turn, answer = await start_turn(client, account, session_id, "slow")
    answer = await wait_for_text(client, account, session_id, answer["id"], 8)
    state: AppState = app.state.resources
    async with state.sessionmaker() as db, db.begin():
        await generation_crud.claim(
            db,
            uuid.UUID(answer["id"]),
            owner="elsewhere:1:taker",
            lease_until=datetime.now(UTC) + timedelta(minutes=5),
            now=datetime.now(UTC) + timedelta(hours=1),  # as if the lease had run out
        )
    at_takeover = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    length_at_takeover = len(at_takeover.json()["partial_content"])

    await wait_for_outcome(llm, "slow", "client left")  # at its next write

    stopped = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    kept = stopped.json()["partial_content"]
    await asyncio.sleep(0.3)
    later = await client.get(message_path(session_id, answer["id"]), headers=account.headers)
    assert later.json()["status"] == "in_progress"
    assert later.json()["partial_content"] == kept and text.startswith(kept)
    async with state.sessionmaker() as db:
        lease = await generation_crud.get(db, uuid.UUID(answer["id"]))
        written_after = await db.scalar(
            select(func.count())
            .select_from(MessageChunk)
            .where(
                MessageChunk.message_id == uuid.UUID(answer["id"]),
                MessageChunk.start >= length_at_takeover,
            )
        )
    assert lease is not None and lease.owner == "elsewhere:1:taker"
    # At most the one write that was under way as the lease was taken (it began before).
    assert written_after is not None and written_after <= 1
    assert len(text) - len(kept) > 20  # it stopped well before the end
    turn.cancel()  # its follower would wait for the taker
    with contextlib.suppress(asyncio.CancelledError):
        await turn


async def test_a_generation_started_with_a_turn_that_is_undone_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A turn's generation calls the provider before the turn has committed; when the turn's
    transaction is undone instead, the call is closed and nothing is written."""
    account, session_id = await new_session(factory)
    messages = f"{API}/sessions/{session_id}/messages"
    await client.post(messages, json={"role": "user", "content": "Why?"}, headers=account.headers)
    pending = await client.post(
        messages, json={"role": "assistant", "status": "pending"}, headers=account.headers
    )
    answer_id = uuid.UUID(pending.json()["id"])
    state: AppState = app.state.resources
    async with state.sessionmaker() as db:
        principal = store.owner_principal(uuid.UUID(account.user_id))
        source = await store.prompt_source(
            RequestContext(db, principal, state), uuid.UUID(session_id), answer_id, 8192
        )
    await llm.script("undone", {"hang_after": 2})
    runner = app.state.generation
    job = Job(
        answer_id,
        uuid.UUID(session_id),
        uuid.UUID(account.user_id),
        1,
        GenerationParams(model="undone"),
        source=source,
    )

    runner.start_with_turn(job, runner.reserve())
    await wait_for_outcome(llm, "undone", "hanging")
    runner.settle_turn(answer_id, False)

    await wait_for_outcome(llm, "undone", "client left")
    for _ in range(100):
        if not runner.running(answer_id):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the generation did not end")
    stored = await client.get(message_path(session_id, str(answer_id)), headers=account.headers)
    assert (stored.json()["status"], stored.json()["partial_content"]) == ("pending", "")


async def test_a_turn_undone_after_the_provider_was_called_closes_the_call(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /chat calls the provider once its checks have passed, before the lease is written
    and the turn commits: a write that fails after the call undoes the turn, and the call is
    closed with nothing written."""
    account, session_id = await new_session(factory)
    await llm.script("slow", {"hang_after": 2})

    async def lease_lost(*_: Any, **__: Any) -> bool:
        await wait_for_outcome(llm, "slow", "hanging")  # the provider is answering
        raise OperationalError("INSERT INTO generation ...", {}, Exception("connection lost"))

    monkeypatch.setattr(store, "add_generation", lease_lost)
    response = await client.post(
        chat_path(session_id), json={"content": "go", "model": "slow"}, headers=account.headers
    )

    assert_problem(response, 503, "service_unavailable")
    await wait_for_outcome(llm, "slow", "client left")
    runner = app.state.generation
    for _ in range(100):
        if not runner._live:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the generation did not end")
    listed = await client.get(f"{API}/sessions/{session_id}/messages", headers=account.headers)
    assert listed.json()["data"] == []


async def test_two_continues_in_one_session_at_once_start_one_generation(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    llm: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two abandoned answers of one session, continued at once: one is generated, the other
    is 409 generation_in_progress (the second's checks wait for the first's commit), even with
    the time between a continue's checks and its commit drawn out."""
    check_limits = turns._check_limits

    async def slow_commit(*args: Any, **kwargs: Any) -> None:
        await check_limits(*args, **kwargs)
        await asyncio.sleep(0.2)

    monkeypatch.setattr(turns, "_check_limits", slow_commit)
    await llm.script("slow", {"text": default_text(60), "delay": 0.05})
    account, session_id = await new_session(factory)
    answers = []
    for question in ("Why?", "And then?"):
        await factory.message(account, session_id, role="user", content=question)
        answer = await factory.message(
            account,
            session_id,
            role="assistant",
            status="in_progress",
            partial_content="The ",
            model="slow",
        )
        answers.append(answer["id"])

    responses = await asyncio.gather(
        *(
            client.post(f"{message_path(session_id, answer_id)}/continue", headers=account.headers)
            for answer_id in answers
        )
    )

    assert sorted(response.status_code for response in responses) == [202, 409]
    [refused] = [response for response in responses if response.status_code == 409]
    assert_problem(refused, 409, "generation_in_progress")
    async with app.state.resources.sessionmaker() as db:
        live = await generation_crud.open_for(db, uuid.UUID(account.user_id), uuid.UUID(session_id))
    assert len(live) == 1
    [started] = [a for a, r in zip(answers, responses, strict=True) if r.status_code == 202]
    await wait_for_status(client, account, session_id, started)


async def test_a_continue_while_the_failed_run_is_still_ending_here_is_generated(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed run's failure is committed, but the run has not left the process yet (its
    after-commit work, drawn out here): a continue claims the answer meanwhile, and its run
    starts once the failed one is done, instead of never."""
    run = AnswerGenerator.run

    async def slow_to_leave(generator: AnswerGenerator, live: Any) -> Any:
        outcome = await run(generator, live)
        await asyncio.sleep(0.5)
        return outcome

    monkeypatch.setattr(AnswerGenerator, "run", slow_to_leave)
    account, session_id = await new_session(factory)
    text = default_text(30)
    await llm.script("cut", {"text": text, "fail_after": 7}, {"text": text})
    failed = await client.post(
        chat_path(session_id),
        json={"content": "go", "model": "cut", "stream": False},
        headers=account.headers,
    )
    answer_id = assert_problem(failed, 502, "provider_error")["assistant_message_id"]

    continued = await client.post(
        f"{message_path(session_id, answer_id)}/continue", headers=account.headers
    )

    assert continued.status_code == 202, continued.text
    done = await wait_for_status(client, account, session_id, answer_id, timeout=10)
    assert done["status"] == "complete" and done["content"] == text


async def test_a_continue_here_after_the_lease_ran_out_here_is_generated_once(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A run's lease runs out while it goes on (a long pause), and a /continue in the same
    process claims the answer: the old run stops at its next write without ending the new
    run's lease (same process, an earlier attempt), and the new run completes the answer."""
    account, session_id = await new_session(factory)
    text = default_text(80)
    await llm.script("slow", {"text": text, "delay": 0.05})
    async with chat_app(app_with, llm, generation_sweep_seconds=3600) as chat:
        turn, answer = await start_turn(chat.client, account, session_id, "slow")
        async with chat.state.sessionmaker() as db, db.begin():
            await db.execute(
                update(Generation)
                .where(Generation.message_id == uuid.UUID(answer["id"]))
                .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        continued = await chat.client.post(
            f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
        )
        assert continued.status_code == 202, continued.text
        done = await wait_for_status(client, account, session_id, answer["id"], timeout=10)
        turn.cancel()

    assert done["status"] == "complete", done
    assert done["content"] == text
    assert done["metadata"]["attempt"] == 2
    assert len(await llm.requests()) == 2


async def test_a_run_whose_lease_a_continue_here_claimed_stops_at_its_next_renewal(
    app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """As above, but the old run writes nothing more (its provider went silent): its next
    renewal, which renews only its own run's lease, tells it the answer is another run's, and
    it stops; the continue's run, which waits for it, then generates the answer."""
    account, session_id = await new_session(factory)
    text = default_text(40)
    await llm.script("slow", {"text": text, "delay": 0.02, "hang_after": 3}, {"text": text})
    settings = {"generation_lease_seconds": 1.5, "llm_timeout_seconds": 30.0}
    async with chat_app(app_with, llm, generation_sweep_seconds=3600, **settings) as chat:
        turn, answer = await start_turn(chat.client, account, session_id, "slow")
        # All the old run read is stored: it has nothing more to write.
        silent_from = len("".join(f"{word} " for word in text.split()[:3]))
        await wait_for_text(client, account, session_id, answer["id"], silent_from)
        path = f"{message_path(session_id, answer['id'])}/continue"
        for _ in range(20):
            async with chat.state.sessionmaker() as db, db.begin():
                await db.execute(
                    update(Generation)
                    .where(Generation.message_id == uuid.UUID(answer["id"]))
                    .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
            continued = await chat.client.post(path, headers=account.headers)
            if continued.status_code != 409:  # else a renewal came in between
                break
        assert continued.status_code == 202, continued.text
        done = await wait_for_status(client, account, session_id, answer["id"], timeout=10)
        turn.cancel()

    assert done["status"] == "complete", done
    assert done["content"] == text
    assert done["metadata"]["attempt"] == 2


@pytest.mark.parametrize(
    ("deleted", "model"), [("session", "silent"), ("message", "cut"), ("user", "other")]
)
async def test_deleting_an_answer_being_generated_stops_its_provider_call(
    app_with: AppWith, llm: LlmServer, deleted: str, model: str
) -> None:
    """Its lease (60 s) is not renewed within the test and the provider sends nothing more
    (no write to find the answer gone), so only the stop sent with the deletion ends the call
    within seconds."""
    await llm.script(model, {"hang_after": 2})
    async with chat_app(
        app_with,
        llm,
        generation_lease_seconds=60,
        generation_sweep_seconds=3600,
        llm_timeout_seconds=60,
    ) as generating:
        client = generating.client
        account, session_id = await new_session(Factory(client))
        turn, answer = await start_turn(client, account, session_id, model)
        paths = {
            "session": f"{API}/sessions/{session_id}",
            "message": message_path(session_id, answer["id"]),
            "user": f"{API}/users/me",
        }
        try:
            await wait_for_outcome(llm, model, "hanging")
            gone = await client.delete(paths[deleted], headers=account.headers)
            assert gone.status_code == (204 if deleted == "user" else 200), gone.text

            await wait_for_outcome(llm, model, "client left", timeout=5)
            runner = generating.app.state.generation
            for _ in range(100):
                if not runner.running(uuid.UUID(answer["id"])):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the generation went on")
        finally:
            turn.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await turn


async def test_cancel_and_continue_in_an_archived_session_restore_it_first(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """As every message route: the archived messages come back, then the route acts as on a
    live session (before, both answered 404 message_not_found)."""
    account, session_id, answer = await _abandoned(factory)
    await archive_session(app, session_id)

    continued = await client.post(
        f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
    )
    assert continued.status_code == 202, continued.text
    done = await wait_for_status(client, account, session_id, answer["id"])
    assert done["content"] == DEFAULT_TEXT  # the stored text, then the rest once

    account, session_id, answer = await _abandoned(factory)
    await archive_session(app, session_id)
    cancelled = await client.post(
        f"{message_path(session_id, answer['id'])}/cancel", headers=account.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["partial_content"]) == (
        "cancelled",
        "The fixture uses ",
    )
    listed = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert listed.json()["archived_at"] is None


async def test_continue_of_an_abandoned_pending_answer_answers_it_in_progress(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Its writer died before its first delta; docs/api.md: `202` with the message
    (`in_progress`)."""
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, role="user", content="Why?")
    answer = await factory.message(account, session_id, role="assistant", status="pending")

    response = await client.post(
        f"{message_path(session_id, answer['id'])}/continue", headers=account.headers
    )

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "in_progress"
    done = await wait_for_status(client, account, session_id, answer["id"])
    assert (done["status"], done["content"]) == ("complete", DEFAULT_TEXT)


async def test_an_answer_waiting_to_be_taken_over_counts_against_the_limits(
    app: FastAPI, app_with: AppWith, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """Its process died: the answer is continued by the next sweep (the module's app sweeps
    only at its start). A turn started meanwhile was accepted, and the takeover then generated
    both at once in one session, and past the user's limit."""
    state = app.state.resources
    account, session_id, orphan_id = await _orphan(state, client, factory)

    in_session = await client.post(
        chat_path(session_id), json={"content": "and now?"}, headers=account.headers
    )
    body = assert_problem(in_session, 409, "generation_in_progress")
    assert body["message_id"] == orphan_id
    limit = app.state.resources.settings.generation_concurrency_per_user
    for _ in range(limit - 1):
        await _orphan(state, client, factory, account=account)
    other = await factory.chat_session(account)
    elsewhere = await client.post(
        chat_path(other["id"]), json={"content": "hi"}, headers=account.headers
    )
    assert_problem(elsewhere, 429, "too_many_generations")
    assert await llm.requests() == []

    # Once taken over and complete, the session takes turns again.
    async with chat_app(app_with, llm, generation_sweep_seconds=60):
        done = await wait_for_status(client, account, session_id, orphan_id)
    assert done["status"] == "complete"
    turn = await client.post(
        chat_path(session_id),
        json={"content": "and now?", "stream": False},
        headers=account.headers,
    )
    assert turn.status_code == 201, turn.text


async def test_a_continue_that_fails_otherwise_keeps_no_earlier_failure(
    client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """A continued answer that failed again showed the first run's provider_status beside the
    second run's error_kind."""
    account, session_id = await new_session(factory)
    await llm.script("cut", {"status": 500}, {"text": default_text(30), "fail_after": 5})
    failed = await client.post(
        chat_path(session_id),
        json={"content": "go", "model": "cut", "stream": False},
        headers=account.headers,
    )
    answer_id = assert_problem(failed, 502, "provider_error")["assistant_message_id"]
    first = await wait_for_status(client, account, session_id, answer_id)
    assert (first["metadata"]["error_kind"], first["metadata"]["provider_status"]) == (
        "status",
        500,
    )

    continued = await client.post(
        f"{message_path(session_id, answer_id)}/continue", headers=account.headers
    )
    assert continued.status_code == 202, continued.text
    second = await wait_for_status(client, account, session_id, answer_id)

    assert second["status"] == "failed"
    assert (second["metadata"]["error_kind"], second["metadata"]["attempt"]) == ("connection", 2)
    assert "provider_status" not in second["metadata"], second["metadata"]
