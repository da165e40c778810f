"""Chat turns against real server processes and the test provider (a process of its own)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chat_store.client import (
    AsyncChatStoreClient,
    ChatStoreClient,
    ChatTurn,
    ServerError,
    StreamDelta,
    StreamDone,
)
from chat_store.client._follow import SseParser
from tests.assertions import metric_sample
from tests.backends import Backend
from tests.e2e.conftest import ServerProcess, llm_env, running_server
from tests.e2e.test_client_flows import new_account
from tests.support.llm_server import LlmServer, default_text

pytestmark = pytest.mark.e2e


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


async def test_a_client_that_leaves_a_waiting_turn_is_recorded_as_gone(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    """`stream: false` waits for the answer. A client that gives up meanwhile ends the wait
    (the answer is generated on): the request is a 499 in the log and the metrics, not the 201
    nobody received with the whole answer's time, and it was never a live SSE stream."""
    client, _ = await new_account(chat_server)
    text = default_text(80)
    await llm.script("slow", {"text": text, "delay": 0.05})  # 4 s
    chat_route = 'route="/api/v1/sessions/{session_id}/chat"'
    async with client:
        key = await client.create_api_key("waiting")
        session = await client.create_session()
        async with httpx.AsyncClient(base_url=chat_server.base_url) as http:
            before = (await http.get("/metrics")).text
            with pytest.raises(httpx.ReadTimeout):
                await http.post(
                    f"/api/v1/sessions/{session.id}/chat",
                    json={"content": "Explain", "model": "slow", "stream": False},
                    headers={"X-API-Key": key.key},
                    timeout=1.0,
                )
            answer = await answer_of(client, session.id, ("complete", "failed", "cancelled"))
            after = (await http.get("/metrics")).text
    assert answer.status == "complete"
    assert answer.content == text

    def grew(name: str) -> float:
        return metric_sample(after, name) - metric_sample(before, name)

    assert grew(f'chat_store_http_requests_total{{method="POST",{chat_route},status="499"}}') == 1
    assert grew(f'chat_store_http_requests_total{{method="POST",{chat_route},status="201"}}') == 0
    assert grew("chat_store_streams_opened_total") == 0
    assert f"/api/v1/sessions/{session.id}/chat 499" in chat_server.log()


async def read_stream(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], until_deltas: int | None = None
) -> tuple[list[tuple[str, str | None, dict[str, Any]]], bool]:
    """Events of an SSE answer as (event, id, data); stops after `until_deltas` deltas, or at
    the end of the stream. The flag says whether the connection was cut."""
    events: list[tuple[str, str | None, dict[str, Any]]] = []
    try:
        async with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            parser = SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                events.append((event.event, event.id, json.loads(event.data or "{}")))
                deltas = sum(1 for item in events if item[0] == "delta")
                if until_deltas is not None and deltas >= until_deltas:
                    break
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return events, True
    return events, False


async def test_cancel_from_another_process_stops_the_generation(
    e2e_backend: Backend, llm: LlmServer
) -> None:
    env = llm_env(llm, GENERATION_LEASE_SECONDS="2")
    async with (
        running_server(e2e_backend, **env) as first,
        running_server(e2e_backend, **env) as second,
    ):
        client, _ = await new_account(first)
        await llm.script("silent", {"hang_after": 3})
        async with client:
            session = await client.create_session()
            turn = asyncio.create_task(
                client._request(
                    "POST",
                    f"/api/v1/sessions/{session.id}/chat",
                    json={"content": "go", "model": "silent", "stream": False},
                )
            )
            answer = await answer_of(client, session.id, ("in_progress",))
            other = second.client(access_token=client.access_token)
            async with other:
                cancelled = await other.cancel(session.id, answer.id)
            assert cancelled.status == "cancelled"
            # The first process stops its provider call: at once through Redis, or at its
            # next lease renewal (a third of 2 s) without it.
            deadline = asyncio.get_running_loop().time() + 10
            while (await llm.requests("silent"))[-1]["outcome"] != "client left":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            response = await turn
            assert response.status_code == 201
            assert response.json()["assistant_message"]["status"] == "cancelled"


async def test_a_killed_generating_process_is_taken_over_and_a_follower_ends_with_the_text_once(
    e2e_backend: Backend, llm: LlmServer
) -> None:
    env = llm_env(llm, GENERATION_LEASE_SECONDS="2", GENERATION_SWEEP_SECONDS="0.5")
    text = default_text(150)
    await llm.script("slow", {"text": text, "delay": 0.04})  # 6 s
    async with (
        running_server(e2e_backend, **env) as doomed,
        running_server(e2e_backend, **env) as survivor,
    ):
        client, _ = await new_account(doomed)
        async with client:
            key = (await client.create_api_key("follower")).key
            headers = {"X-API-Key": key}
            session = await client.create_session()
            async with httpx.AsyncClient(base_url=doomed.base_url, timeout=30) as http:
                # The turn, read up to its first deltas; the generation goes on in `doomed`.
                async with http.stream(
                    "POST",
                    f"/api/v1/sessions/{session.id}/chat",
                    json={"content": "Explain", "model": "slow"},
                    headers=headers,
                ) as response:
                    parser = SseParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None and event.event == "turn":
                            answer_id = json.loads(event.data)["assistant_message"]["id"]
                            break
                path = f"/api/v1/sessions/{session.id}/messages/{answer_id}/stream"
                seen, _ = await read_stream(http, path, headers, until_deltas=3)

                # A follower on the doomed process, cut off by its death mid-answer.
                follower = asyncio.create_task(
                    read_stream(http, path, {**headers, "Last-Event-ID": seen[-1][1] or "0"})
                )
                await asyncio.sleep(0.5)
                doomed.process.kill()
                doomed.wait()
                before, cut = await follower
            assert cut
            received = seen + before
            offset = received[-1][1]
            assert offset is not None and 0 < int(offset) < len(text)

            # The follower reconnects to the survivor with Last-Event-ID and follows to the end.
            async with httpx.AsyncClient(base_url=survivor.base_url, timeout=60) as http:
                after, cut = await read_stream(http, path, {**headers, "Last-Event-ID": offset})
            assert not cut
            assert after[-1][0] == "done"
            assert after[-1][2]["status"] == "complete"
            followed = "".join(
                data["delta"] for name, _, data in received + after if name == "delta"
            )
            assert followed == text  # every character once

            async with survivor.client(api_key=key) as other:
                stored = await other.get_message(session.id, answer_id)
            assert stored.content == text
            assert stored.metadata["attempt"] == 2
            _, second = await llm.requests("slow")
            assert second["body"]["messages"][-1]["role"] == "assistant"
            assert text.startswith(second["body"]["messages"][-1]["content"])


class _CutAsync(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, chunks: int) -> None:
        self._inner, self._chunks = inner, chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._inner:
            if sent >= self._chunks:
                raise httpx.ReadError("connection cut")
            sent += 1
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CutSync(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, chunks: int) -> None:
        self._inner, self._chunks = inner, chunks

    def __iter__(self) -> Iterator[bytes]:
        for sent, chunk in enumerate(self._inner):
            if sent >= self._chunks:
                raise httpx.ReadError("connection cut")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class CuttingTransport(httpx.AsyncHTTPTransport):
    """A network that cuts the answers to POST /chat: the first after `cuts[0]` chunks of its
    body, the next after `cuts[1]`, ..."""

    def __init__(self, cuts: list[int]) -> None:
        super().__init__()
        self.cuts = list(cuts)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not (request.url.path.endswith("/chat") and self.cuts):
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutAsync(response.stream, self.cuts.pop(0)),
            request=request,
        )


class CuttingSyncTransport(httpx.HTTPTransport):
    def __init__(self, cuts: list[int]) -> None:
        super().__init__()
        self.cuts = list(cuts)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not (request.url.path.endswith("/chat") and self.cuts):
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutSync(response.stream, self.cuts.pop(0)),
            request=request,
        )


async def test_a_waiting_turn_is_answered_as_it_stands_when_its_server_stops(
    e2e_backend: Backend, llm: LlmServer, chat_server: ServerProcess
) -> None:
    """`stream: false` waits for the answer within the request's time limit. SIGTERM made
    uvicorn wait its whole graceful shutdown (10 s) for that request and then cut it: a
    plain-text 500 for a turn that was stored and went on. It is answered 202 at once now, the
    answer handed over, and the next process completes it."""
    text = default_text(150)
    await llm.script("slow", {"text": text, "delay": 0.05})  # 7.5 s
    env = llm_env(llm)
    async with running_server(e2e_backend, **env) as stopping:
        client, _ = await new_account(stopping)
        async with client:
            key = (await client.create_api_key("waiting")).key
            session = await client.create_session()
        async with httpx.AsyncClient(base_url=stopping.base_url, timeout=30) as http:
            waiting = asyncio.create_task(
                http.post(
                    f"/api/v1/sessions/{session.id}/chat",
                    json={"content": "Explain", "model": "slow", "stream": False},
                    headers={"X-API-Key": key},
                )
            )
            while not await llm.requests("slow"):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            loop = asyncio.get_running_loop()
            signalled = loop.time()
            stopping.terminate()
            answered = await waiting
            took = loop.time() - signalled
        assert stopping.wait() == -signal.SIGTERM
        assert answered.status_code == 202, answered.text
        assert took < 5, took  # not the graceful shutdown's 10 s
        turn = answered.json()
        assert turn["assistant_message"]["status"] in ("pending", "in_progress")
        assert text.startswith(turn["assistant_message"]["partial_content"] or "")
    async with (
        running_server(e2e_backend, migrate=False, **env) as restarted,
        restarted.client(api_key=key) as other,
    ):
        answer = await answer_of(other, session.id, ("complete", "failed"), timeout=40)
        said = restarted.log() + chat_server.log()  # the module's server shares the database
    assert answer.status == "complete"
    assert answer.content == text
    # Handed over by a process that stopped: nothing died (the takeover, logged and counted,
    # is for a process that stopped renewing its lease).
    answer_id = turn["assistant_message"]["id"]
    assert f"continuing generation {answer_id}" in said, said
    assert f"taking over generation {answer_id}" not in said, said


async def test_the_client_chat_reattaches_by_itself_and_gets_the_answer_once(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    """The first answer to the turn is cut before its `turn` event (the turn is sent again, as
    the same turn), the second after a few events (the answer is followed from there)."""
    client, _ = await new_account(chat_server)
    text = default_text(40)
    await llm.script("slow", {"text": text, "delay": 0.03})
    async with client:
        key = (await client.create_api_key("chat")).key
        session = await client.create_session()
    network = CuttingTransport([0, 3])
    flaky = AsyncChatStoreClient(chat_server.base_url, api_key=key, transport=network)
    async with flaky:
        chat = flaky.chat(session.id, "Explain", model_name="slow", retry_delay=0.1)
        items = [item async for item in chat]

    assert network.cuts == []  # both answers were cut
    turns = [item for item in items if isinstance(item, ChatTurn)]
    assert len(turns) == 1 and items[0] is turns[0]
    assert "".join(item.delta for item in items if isinstance(item, StreamDelta)) == text
    assert items[-1] == StreamDone(status="complete", error_message=None, length=len(text))
    assert len(await llm.requests("slow")) == 1  # one turn, one model call
    async with chat_server.client(api_key=key) as reader:
        assert (await reader.get_session(session.id)).message_count == 2


async def test_the_blocking_client_chats_cancels_and_continues(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    client, _ = await new_account(chat_server)
    text = default_text(30)
    await llm.script("slow", {"text": text, "delay": 0.02})
    await llm.script("cut", {"text": text, "fail_after": 5}, {"text": text})
    async with client:
        key = (await client.create_api_key("chat")).key
        session = await client.create_session(system_prompt="Be brief.")

    network = CuttingSyncTransport([4])

    def converse() -> tuple[list[Any], Any, Any]:
        with ChatStoreClient(chat_server.base_url, api_key=key, transport=network) as blocking:
            items = list(blocking.chat(session.id, "Explain", model_name="slow", retry_delay=0.1))
            try:
                blocking.send_chat(session.id, "Again", model_name="cut")
            except ServerError as exc:
                failed_id = exc.problem["assistant_message_id"]
            continued = blocking.continue_message(session.id, failed_id)
            done = list(blocking.follow(session.id, failed_id, offset=len(continued.text)))
            final = blocking.get_message(session.id, failed_id)
            return items, done, final

    items, done, final = await asyncio.to_thread(converse)

    assert network.cuts == []
    assert "".join(item.delta for item in items if isinstance(item, StreamDelta)) == text
    assert isinstance(items[-1], StreamDone) and items[-1].status == "complete"
    assert done[-1].status == "complete"
    assert final.content == text


async def test_the_client_answers_the_models_tool_calls_and_gets_the_final_answer(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    calls = [
        {"id": "call_1", "name": "read_file", "arguments": '{"path": "billing.py"}'},
        {"id": "call_2", "name": "run_tests", "arguments": "{}"},
    ]
    tools = [
        {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "run_tests"}},
    ]
    await llm.script("other", {"tool_calls": calls, "argument_chars": 5}, {"text": "Fixed. "})
    client, _ = await new_account(chat_server)
    async with client:
        session = await client.create_session()
        items = [
            item async for item in client.chat(session.id, "Why?", model_name="other", tools=tools)
        ]
        turn = items[0]
        assert isinstance(turn, ChatTurn)
        calling = await client.get_message(session.id, turn.assistant_message.id)
        assert calling.tool_calls is not None
        assert [(call.id, call.name) for call in calling.tool_calls] == [
            ("call_1", "read_file"),
            ("call_2", "run_tests"),
        ]
        assert calling.tool_calls[0].parsed_arguments() == {"path": "billing.py"}
        assert calling.metadata["finish_reason"] == "tool_calls"

        for call in calling.tool_calls:
            result = await client.append_tool_result(session.id, call.id, f"result of {call.name}")
            assert (result.role, result.tool_call_id) == ("tool", call.id)
        final_items = [
            item async for item in client.chat(session.id, model_name="other", tools=tools)
        ]

    final_turn = final_items[0]
    assert isinstance(final_turn, ChatTurn) and final_turn.user_message is None
    assert "".join(item.delta for item in final_items if isinstance(item, StreamDelta)) == "Fixed. "
    assert isinstance(final_items[-1], StreamDone) and final_items[-1].status == "complete"
    _, second = await llm.requests("other")
    sent = second["body"]["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "tool", "tool"]
    assert [message.get("tool_call_id") for message in sent[2:]] == ["call_1", "call_2"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "read_file",
        "arguments": '{"path": "billing.py"}',
    }
