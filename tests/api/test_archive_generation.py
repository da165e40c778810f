"""A generated answer archived with its session: continued after the restore, it is asked as
its turn asked (the turn's params come back with the messages), and its runs go on counting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.assertions import assert_problem
from tests.backends import Backend
from tests.conftest import running_app
from tests.factories import Factory
from tests.support.chat import (
    archive_session,
    chat_path,
    chat_settings,
    message_path,
    new_session,
    wait_for_status,
)
from tests.support.llm_server import LlmServer, default_text


@pytest.fixture(scope="module")
async def app(backend: Backend, llm: LlmServer) -> AsyncIterator[FastAPI]:
    async with running_app(chat_settings(backend, llm)) as started:
        yield started


async def test_continue_after_a_restore_sends_the_turns_params_again(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, llm: LlmServer
) -> None:
    """The archive took the answer's generation with its message (ON DELETE CASCADE): restored
    without it, the continue took the answer for one a client wrote, asked without the turn's
    tools, system prompt and temperature, and counted its runs from 1 again."""
    account, session_id = await new_session(factory)
    text = default_text(30)
    await llm.script("cut", {"text": text, "fail_after": 7}, {"text": text})
    turn_fields = {
        "tools": [{"type": "function", "function": {"name": "read_file"}}],
        "tool_choice": {"type": "function", "function": {"name": "read_file"}},
        "parallel_tool_calls": False,
        "temperature": 0.3,
    }
    failed = await client.post(
        chat_path(session_id),
        json={
            "content": "go",
            "model": "cut",
            "stream": False,
            "system": "Answer in one line.",
            "max_output_tokens": 321,
            **turn_fields,
        },
        headers=account.headers,
    )
    answer_id = assert_problem(failed, 502, "provider_error")["assistant_message_id"]
    await wait_for_status(client, account, session_id, answer_id)
    await archive_session(app, session_id)

    continued = await client.post(
        f"{message_path(session_id, answer_id)}/continue", headers=account.headers
    )

    assert continued.status_code == 202, continued.text
    done = await wait_for_status(client, account, session_id, answer_id)
    assert (done["status"], done["content"]) == ("complete", text)
    first, second = await llm.requests("cut")
    for request in (first, second):
        assert {key: request["body"].get(key) for key in turn_fields} == turn_fields
    assert done["metadata"]["attempt"] == 2
    # Everything else asked as the turn asked (the output limit, the model, ...), the system
    # prompt first; only the messages differ (the stored text as the start of the answer).
    assert {k: v for k, v in second["body"].items() if k != "messages"} == {
        k: v for k, v in first["body"].items() if k != "messages"
    }
    assert second["body"]["messages"][0] == first["body"]["messages"][0]
    assert first["body"]["messages"][0] == {"role": "system", "content": "Answer in one line."}
