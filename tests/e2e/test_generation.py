"""Chat turns against real server processes and the test provider (a process of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chat_store.client import AsyncChatStoreClient
from chat_store.client._follow import SseParser
from tests.backends import Backend
from tests.e2e.conftest import NO_LIMITS, ServerProcess, running_server
from tests.e2e.test_client_flows import new_account
from tests.support.chat import MODELS
from tests.support.llm_server import LlmServer, default_text, llm_server_process

pytestmark = pytest.mark.e2e


def llm_env(llm: LlmServer, **overrides: str) -> dict[str, str]:
    env = {
        **NO_LIMITS,
        "LLM_BASE_URL": llm.base_url,
        "LLM_MODEL": "test",
        "LLM_MODELS": ",".join(MODELS),
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_SECONDS": "5",
        "GENERATION_FLUSH_SECONDS": "0.02",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def llm() -> Iterator[LlmServer]:
    with llm_server_process() as server:
        yield server


@pytest.fixture(scope="module")
async def chat_server(e2e_backend: Backend, llm: LlmServer) -> AsyncIterator[ServerProcess]:
    async with running_server(e2e_backend, **llm_env(llm)) as started:
        yield started


async def answer_of(
    client: AsyncChatStoreClient, session_id: Any, statuses: tuple[str, ...], timeout: float = 30
) -> Any:
    """The session's newest assistant message once its status is one of `statuses`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        page = await client.list_messages(session_id, order="desc", limit=5)
        answers = [m for m in page.data if m.role == "assistant"]
        if answers and answers[0].status in statuses:
            return answers[0]
        assert loop.time() < deadline, answers
        await asyncio.sleep(0.05)


async def test_a_client_that_leaves_mid_answer_still_gets_the_answer_stored(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    client, _ = await new_account(chat_server)
    text = default_text(60)
    await llm.script("slow", {"text": text, "delay": 0.05})  # 3 s
    async with client:
        key = await client.create_api_key("chat")
        session = await client.create_session()
        seen: list[str] = []
        async with (
            httpx.AsyncClient(base_url=chat_server.base_url, timeout=10) as http,
            http.stream(
                "POST",
                f"/api/v1/sessions/{session.id}/chat",
                json={"content": "Explain", "model": "slow"},
                headers={"X-API-Key": key.key},
            ) as response,
        ):
            assert response.status_code == 200
            parser = SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    seen.append(event.event)
                if seen.count("delta") == 2:
                    break  # the client goes away mid-answer
        assert seen[0] == "turn"

        answer = await answer_of(client, session.id, ("complete", "failed", "cancelled"))
        assert answer.status == "complete"
        assert answer.content == text
        [request] = await llm.requests("slow")
        assert request["outcome"] == "complete"  # the provider call was not cut either
